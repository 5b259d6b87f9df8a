//! openraft's state machine for a partition: what committing entries changes.
//!
//! The partition's data is its log, so the state machine is small: the last applied log id,
//! the last membership, the high watermark (the offset after the last committed data batch;
//! consumers read only below it) and the idempotent producers' table (each producer's epoch,
//! next sequence and last batches, as the applied batches left it). Snapshots hold just that;
//! see [`super::snapshot`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use sidestream_log::batch::DecodeError;
use sidestream_log::{BatchBody, BatchHeader, Offset, RecordBatch};
use tokio::sync::watch;

use super::bundle::{self, BundleError, SnapshotData};
use super::group_state::{GroupApplied, GroupCommand, GroupTable};
use super::log_store::{PartitionLogStore, storage_error};
use super::snapshot::{LoadSnapshotError, PartitionState, SnapshotStore, StoredSnapshot};
use super::type_config::{Applied, NodeId, PartitionEntry, PartitionRaft, PartitionWrite};
use crate::topics::producers::Producers;

/// A partition's Raft state machine.
///
/// Method families, in openraft's order of use: [`PartitionStateMachine::open`] (loads the
/// saved snapshot), then openraft's `applied_state`, `apply` (committed entries in order), and
/// the snapshot family (`get_snapshot_builder`, `get_current_snapshot`,
/// `begin_receiving_snapshot`, `install_snapshot`).
///
/// Only snapshots are saved: after a restart the state is the last snapshot's, and openraft
/// applies the committed entries after it again (the log store keeps the committed log id).
#[derive(Debug)]
pub struct PartitionStateMachine {
    state: PartitionState,
    snapshots: Arc<SnapshotStore>,
    /// The partition's directory, where a snapshot from the leader is received.
    dir: PathBuf,
    /// The partition's log store: snapshots sent carry its batches, and one installed
    /// rebuilds its log.
    store: PartitionLogStore,
    high_watermark: watch::Sender<Offset>,
    /// The producers' table as applied, shared with the partition's publishers (a new leader
    /// starts its own table of proposed batches from it).
    producers: Arc<Mutex<Producers>>,
    /// The groups' positions as applied, shared with readers of committed offsets.
    groups: Arc<Mutex<GroupTable>>,
}

/// Tells whether a partition's state machine, or a snapshot builder of it, is still alive.
#[derive(Debug, Clone)]
pub(crate) struct StateMachineAlive(std::sync::Weak<SnapshotStore>);

impl StateMachineAlive {
    /// How many of the state machine and its snapshot builders are alive.
    pub(crate) fn strong_count(&self) -> usize {
        self.0.strong_count()
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct PartitionSnapshotBuilder {
    state: PartitionState,
    snapshots: Arc<SnapshotStore>,
    store: PartitionLogStore,
}

impl PartitionStateMachine {
    /// Opens the state machine of the partition whose directory is `dir` and whose log store
    /// is `store`, starting from the snapshot saved there, if any. A snapshot whose install a
    /// crash cut short (saved, but the log not yet rebuilt from it) is finished first.
    pub fn open(dir: &Path, store: &PartitionLogStore) -> Result<Self, LoadSnapshotError> {
        let snapshots = SnapshotStore::open(dir)?;
        let current = snapshots.current();
        finish_install(dir, store, current.as_ref())?;
        let state = current.map(|snapshot| snapshot.state).unwrap_or_default();
        Ok(Self {
            dir: dir.to_path_buf(),
            store: store.clone(),
            high_watermark: watch::Sender::new(state.high_watermark),
            producers: Arc::new(Mutex::new(state.producers.clone())),
            groups: Arc::new(Mutex::new(state.groups.clone())),
            state,
            snapshots: Arc::new(snapshots),
        })
    }

    /// A handle that tells whether this state machine, or a snapshot builder of it, is still
    /// alive: openraft's `Raft::shutdown` does not wait for its state machine worker.
    pub(crate) fn alive(&self) -> StateMachineAlive {
        StateMachineAlive(Arc::downgrade(&self.snapshots))
    }

    /// The high watermark as it moves: readers of committed data wait on it. It starts at the
    /// saved snapshot's and catches up as openraft applies the committed entries after it.
    pub fn watch_high_watermark(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }

    /// The idempotent producers' table as the applied batches left it.
    pub(crate) fn shared_producers(&self) -> Arc<Mutex<Producers>> {
        Arc::clone(&self.producers)
    }

    /// The groups' positions as the applied group commands left them.
    pub(crate) fn shared_groups(&self) -> Arc<Mutex<GroupTable>> {
        Arc::clone(&self.groups)
    }

    /// Tells the watchers of the high watermark where it is now.
    fn publish_high_watermark(&self) {
        let now = self.state.high_watermark;
        self.high_watermark.send_if_modified(|watched| {
            let moved = *watched != now;
            *watched = now;
            moved
        });
    }

    /// The state after the last applied entry.
    pub fn state(&self) -> &PartitionState {
        &self.state
    }

    /// The offset after the last committed data batch.
    pub fn high_watermark(&self) -> Offset {
        self.state.high_watermark
    }

    fn apply_one(&mut self, entry: PartitionEntry) -> Result<Applied, DecodeError> {
        let log_id = entry.log_id;
        let mut group = None;
        let base_offset = match entry.payload {
            EntryPayload::Blank => self.state.high_watermark,
            EntryPayload::Normal(PartitionWrite(batch, _))
                if BatchHeader::parse(&batch)?.control =>
            {
                group = Some(self.apply_group(log_id, &batch));
                self.state.high_watermark
            }
            EntryPayload::Normal(PartitionWrite(batch, _)) => {
                let header = BatchHeader::parse(&batch)?;
                if header.base_offset != self.state.high_watermark {
                    tracing::warn!(
                        %log_id,
                        base_offset = header.base_offset,
                        high_watermark = self.state.high_watermark,
                        "committed batch does not start at the high watermark"
                    );
                }
                self.state.high_watermark = header.next_offset();
                // Every replica applies the same batches in the same order: the same table.
                let offsets = (header.base_offset, header.next_offset());
                self.state
                    .producers
                    .appended(header.producer, header.record_count, offsets);
                if header.producer.producer_id >= 0 {
                    self.producers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .appended(header.producer, header.record_count, offsets);
                }
                header.base_offset
            }
            EntryPayload::Membership(membership) => {
                self.state.last_membership = StoredMembership::new(Some(log_id), membership);
                self.state.high_watermark
            }
        };
        self.state.last_applied = Some(log_id);
        Ok(Applied {
            base_offset,
            high_watermark: self.state.high_watermark,
            group,
        })
    }

    /// Applies a group command's control batch (the only control batch a normal entry
    /// carries). One that cannot be read changes nothing, on every replica alike.
    fn apply_group(&mut self, log_id: LogId<NodeId>, batch: &bytes::Bytes) -> GroupApplied {
        let command = match RecordBatch::decode(batch) {
            Ok(RecordBatch {
                body: BatchBody::Control(control),
                ..
            }) => GroupCommand::from_payload(&control.payload).map_err(|e| e.to_string()),
            Ok(_) => Err("not a control batch".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let command = match command {
            Ok(command) => command,
            Err(error) => {
                tracing::warn!(%log_id, %error, "committed group command cannot be read");
                return GroupApplied::Unreadable;
            }
        };
        let applied = command.apply(&mut self.state.groups);
        if let Some(position) = self.state.groups.get(command.group()) {
            self.groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(command.group().to_owned(), position.clone());
        }
        applied
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionStateMachine {
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.state.last_applied, self.state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = PartitionEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let applied = self
                .apply_one(entry)
                .map_err(|e| storage_error(ErrorSubject::Apply(log_id), ErrorVerb::Write, &e))?;
            replies.push(applied);
        }
        self.publish_high_watermark();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder {
            state: self.state.clone(),
            snapshots: Arc::clone(&self.snapshots),
            store: self.store.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotData>, StorageError<NodeId>> {
        let data = SnapshotData::incoming(&self.dir)
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?;
        self.store.receiving();
        Ok(Box::new(data))
    }

    /// Replaces the state with the snapshot's and saves it as the current snapshot, then
    /// rebuilds the log from the batches the snapshot carries (unless the log holds the
    /// snapshot's last entry already: then it holds everything before it too).
    ///
    /// The order makes a crash harmless: the received file stays until the log is rebuilt,
    /// and opening the state machine finishes an install whose snapshot was saved.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let failed = |e: BundleError| storage_error(subject(), ErrorVerb::Read, &e);
        let path = snapshot.stage(&self.dir).await.map_err(failed)?;
        let staged = path.clone();
        let (header, body) = tokio::task::spawn_blocking(move || bundle::read_header(&staged))
            .await
            .map_err(|e| storage_error(subject(), ErrorVerb::Read, &e))?
            .map_err(failed)?;
        let state = header.state;
        if state.last_applied != meta.last_log_id || state.last_membership != meta.last_membership {
            return Err(storage_error(subject(), ErrorVerb::Read, &SnapshotMismatch));
        }
        let install = header.log.zip(meta.last_log_id);
        if let Some((part, last)) = install {
            // Checked before it is saved: a bundle that cannot be installed changes nothing.
            let (store, staged) = (self.store.clone(), path.clone());
            tokio::task::spawn_blocking(move || store.check_bundle(&staged, &part, body, last))
                .await
                .map_err(|e| storage_error(subject(), ErrorVerb::Read, &e))?
                .map_err(failed)?;
        }
        let stored = StoredSnapshot::new(meta.clone(), state.clone());
        save(&self.snapshots, stored, Some(meta)).await?;
        if let Some((part, last)) = install {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.install(&path, &part, body, last, true))
                .await
                .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?
                .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?;
        } else {
            bundle::remove_staged(&path);
            if let Some(last) = meta.last_log_id {
                let (store, next_offset) = (self.store.clone(), state.high_watermark);
                tokio::task::spawn_blocking(move || store.reset_to(next_offset, last))
                    .await
                    .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?
                    .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?;
            }
        }
        *self
            .producers
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = state.producers.clone();
        *self.groups.lock().unwrap_or_else(PoisonError::into_inner) = state.groups.clone();
        self.state = state;
        self.publish_high_watermark();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<PartitionRaft>>, StorageError<NodeId>> {
        let Some(stored) = self.snapshots.current() else {
            return Ok(None);
        };
        let data = SnapshotData::outgoing(&stored.state, self.store.log()).map_err(|e| {
            let signature = Some(stored.meta.signature());
            storage_error(ErrorSubject::Snapshot(signature), ErrorVerb::Read, &e)
        })?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(data),
        }))
    }
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionSnapshotBuilder {
    /// Builds a snapshot of the state and saves it as the current one (unless a newer one was
    /// installed meanwhile).
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaft>, StorageError<NodeId>> {
        let last = self.state.last_applied;
        let built_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let snapshot_id = match last {
            Some(last) => format!("{}-{}-{built_ms}", last.leader_id.term, last.index),
            None => format!("none-{built_ms}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.state.last_membership.clone(),
            snapshot_id,
        };
        // The log through the snapshot's last entry must be durable before the snapshot is:
        // a snapshot past the log's end after a power cut (a log synced at intervals) would
        // make openraft purge the whole log on restart, the durable batches with it.
        let log = Arc::clone(self.store.log());
        tokio::task::spawn_blocking(move || log.sync())
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        let stored = StoredSnapshot::new(meta.clone(), self.state.clone());
        save(&self.snapshots, stored, None).await?;
        let data = SnapshotData::outgoing(&self.state, self.store.log()).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &e,
            )
        })?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

/// Finishes, when the partition opens, an install of a snapshot from the leader that a crash
/// cut short: if the received bundle is the current snapshot's and the log does not hold the
/// snapshot's last entry, the log is rebuilt from the bundle. A bundle left from a transfer
/// that never completed (or an install that did) is removed.
fn finish_install(
    dir: &Path,
    store: &PartitionLogStore,
    current: Option<&StoredSnapshot>,
) -> Result<(), BundleError> {
    let path = dir.join(bundle::INCOMING_FILE);
    if !path.exists() {
        return Ok(());
    }
    if let Ok((header, body)) = bundle::read_header(&path)
        && let Some(current) = current
        && header.state.last_applied == current.state.last_applied
        && let (Some(part), Some(last)) = (header.log, current.meta.last_log_id)
    {
        tracing::warn!(dir = %dir.display(), %last, "finishing a snapshot install a crash cut short");
        return store.install(&path, &part, body, last, false);
    }
    bundle::remove_staged(&path);
    Ok(())
}

/// The snapshot's data does not describe the state its meta names.
#[derive(Debug, thiserror::Error)]
#[error("snapshot data disagrees with its meta (last applied log id or membership)")]
struct SnapshotMismatch;

/// Saves `stored` as the current snapshot on the blocking pool. An installed snapshot
/// (`installed` is its meta) must become the current one.
async fn save(
    snapshots: &Arc<SnapshotStore>,
    stored: StoredSnapshot,
    installed: Option<&SnapshotMeta<NodeId, BasicNode>>,
) -> Result<(), StorageError<NodeId>> {
    let signature = Some(stored.meta.signature());
    let subject = || ErrorSubject::Snapshot(signature.clone());
    let snapshots = Arc::clone(snapshots);
    let replaced = tokio::task::spawn_blocking(move || snapshots.replace(stored))
        .await
        .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?
        .map_err(|e| storage_error(subject(), ErrorVerb::Write, &e))?;
    if !replaced && let Some(meta) = installed {
        tracing::warn!(%meta, "installed snapshot is older than the current one");
    }
    Ok(())
}
