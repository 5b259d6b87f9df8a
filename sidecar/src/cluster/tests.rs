//! openraft's storage suite over a real log on disk, and what the suite does not check:
//! restarts, offsets, replication of stamped batches, and the state machine's high watermark.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use sidestream_log::{BatchHeader, FileStorage, Log, LogConfig, RecordBatch};
use tempfile::TempDir;

use super::type_config::{Applied, NodeId, PartitionEntry, PartitionRaft, PartitionWrite};
use super::{PartitionLogStore, PartitionStateMachine};

/// Builds a store over a fresh temporary directory per test, fsync `Always`.
struct TempDirBuilder;

impl StoreBuilder<PartitionRaft, PartitionLogStore, PartitionStateMachine, TempDir>
    for TempDirBuilder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, PartitionLogStore, PartitionStateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let (store, state_machine) = open(dir.path());
        Ok((dir, store, state_machine))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    Suite::test_all(TempDirBuilder).unwrap();
}

fn open(dir: &Path) -> (PartitionLogStore, PartitionStateMachine) {
    let log = Log::open(Arc::new(FileStorage), dir, LogConfig::default()).unwrap();
    let store = PartitionLogStore::new(Arc::new(log));
    let state_machine = PartitionStateMachine::open(dir, &store).unwrap();
    (store, state_machine)
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload<PartitionRaft>) -> PartitionEntry {
    PartitionEntry {
        log_id: log_id(term, index),
        payload,
    }
}

/// A producer's batch of `records` events, as the SDK sends it (nothing stamped).
fn write(term: u64, index: u64, records: usize) -> PartitionEntry {
    let batch = RecordBatch::from_records((0..records).map(|i| {
        let key = Bytes::from(format!("order-{i}"));
        (
            Some(key),
            Some(Bytes::from_static(b"placed")),
            1_700_000_000_000,
        )
    }));
    let bytes = Bytes::from(batch.encode().unwrap());
    entry(
        term,
        index,
        EntryPayload::Normal(PartitionWrite::from(bytes)),
    )
}

fn membership(term: u64, index: u64, voters: &[NodeId]) -> PartitionEntry {
    let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
    entry(
        term,
        index,
        EntryPayload::Membership(Membership::new(vec![voters], ())),
    )
}

/// (base offset, next offset) of every data batch in `entries`.
fn offsets(entries: &[PartitionEntry]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(PartitionWrite(batch, _)) => {
                let header = BatchHeader::parse(batch).unwrap();
                Some((header.base_offset, header.next_offset()))
            }
            EntryPayload::Blank | EntryPayload::Membership(_) => None,
        })
        .collect()
}

fn log_ids(entries: &[PartitionEntry]) -> Vec<LogId<NodeId>> {
    entries.iter().map(|e| e.log_id).collect()
}

#[tokio::test]
async fn vote_committed_entries_and_log_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let (store, _) = open(dir.path());
        let mut store = store.save_commits_in_background();
        store
            .blocking_append([
                membership(0, 0, &[1, 2, 3]),
                entry(1, 1, EntryPayload::Blank),
                write(1, 2, 3),
                write(1, 3, 2),
                entry(2, 4, EntryPayload::Blank),
            ])
            .await
            .unwrap();
        store.purge(log_id(0, 0)).await.unwrap();
        store.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
        store.save_committed(Some(log_id(1, 3))).await.unwrap();
        // Reported at once, saved in the background.
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 3)));
        store.committed_saved().await;
        store.try_get_log_entries(..).await.unwrap()
    };

    let (mut store, _) = open(dir.path());
    assert_eq!(
        store.read_vote().await.unwrap(),
        Some(Vote::new_committed(2, 3))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 3)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(0, 0)));
    assert_eq!(state.last_log_id, Some(log_id(2, 4)));
    let read = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(read, written);
    assert_eq!(
        log_ids(&read),
        [log_id(1, 1), log_id(1, 2), log_id(1, 3), log_id(2, 4)]
    );
    assert_eq!(offsets(&read), [(0, 3), (3, 5)]);

    store.blocking_append([write(2, 5, 1)]).await.unwrap();
    assert_eq!(
        offsets(&store.get_log_entries(5..6).await.unwrap()),
        [(5, 6)]
    );
}

#[tokio::test]
async fn a_saved_commit_index_past_the_log_is_read_as_the_last_entry() {
    // A log flushed at intervals can lose a tail in a power cut after the commit index that
    // names it was saved; here the log loses it by truncation, which leaves the same files.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _) = open(dir.path());
        store
            .blocking_append([
                entry(1, 0, EntryPayload::Blank),
                write(1, 1, 3),
                write(1, 2, 2),
                write(1, 3, 1),
            ])
            .await
            .unwrap();
        store.save_committed(Some(log_id(1, 3))).await.unwrap();
        store.log().truncate_from(2).unwrap();
    }
    let (mut store, _) = open(dir.path());
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1)));
    // What openraft re-applies on start is all there.
    assert_eq!(
        log_ids(&store.try_get_log_entries(0..2).await.unwrap()),
        [log_id(1, 0), log_id(1, 1)]
    );

    // An emptied log keeps no commit index.
    store.log().truncate_from(0).unwrap();
    assert_eq!(store.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn data_batches_take_dense_offsets_and_truncation_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path());
    store
        .blocking_append([
            entry(1, 0, EntryPayload::Blank),
            write(1, 1, 2),
            membership(1, 2, &[1]),
            write(1, 3, 3),
            write(1, 4, 1),
        ])
        .await
        .unwrap();
    let read = store.try_get_log_entries(0..5).await.unwrap();
    assert_eq!(offsets(&read), [(0, 2), (2, 5), (5, 6)]);
    assert_eq!(store.log().state().next_offset, 6);

    store.truncate(log_id(1, 3)).await.unwrap();
    assert_eq!(store.log().state().next_offset, 2);
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 2))
    );

    store.blocking_append([write(2, 3, 4)]).await.unwrap();
    let read = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(log_ids(&read).last(), Some(&log_id(2, 3)));
    assert_eq!(offsets(&read), [(0, 2), (2, 6)]);
}

#[tokio::test]
async fn followers_store_the_leaders_bytes_at_the_leaders_offsets() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(leader_dir.path());
    let (mut follower, _) = open(follower_dir.path());
    leader
        .blocking_append([membership(0, 0, &[1, 2]), entry(1, 1, EntryPayload::Blank)])
        .await
        .unwrap();
    leader
        .blocking_append([write(1, 2, 2), write(1, 3, 5)])
        .await
        .unwrap();

    let mut reader = leader.get_log_reader().await;
    let replicated = reader.try_get_log_entries(0..4).await.unwrap();
    // Served from the entries kept in memory, they are the log's own bytes, stamped.
    let on_disk = leader.log().read_entries(0..4).unwrap();
    for (entry, disk) in replicated.iter().zip(&on_disk).skip(2) {
        let EntryPayload::Normal(PartitionWrite(kept, _)) = &entry.payload else {
            panic!("a data entry: {entry:?}");
        };
        assert_eq!(kept, disk);
    }
    follower.blocking_append(replicated.clone()).await.unwrap();
    assert_eq!(follower.try_get_log_entries(..).await.unwrap(), replicated);
    assert_eq!(follower.log().state(), leader.log().state());

    // A follower whose offsets differ from the leader's refuses the leader's batches.
    let diverged_dir = tempfile::tempdir().unwrap();
    let (mut diverged, _) = open(diverged_dir.path());
    diverged
        .blocking_append([membership(0, 0, &[1, 2]), write(0, 1, 1)])
        .await
        .unwrap();
    let err = diverged
        .blocking_append(replicated[2..].to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("offset"), "{err}");
}

#[tokio::test]
async fn applying_moves_the_high_watermark_and_answers_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut state_machine) = open(dir.path());
    let entries = [
        membership(0, 0, &[1]),
        entry(1, 1, EntryPayload::Blank),
        write(1, 2, 3),
        write(1, 3, 2),
    ];
    store.blocking_append(entries).await.unwrap();
    let committed = store.get_log_entries(0..4).await.unwrap();
    let replies = state_machine.apply(committed).await.unwrap();
    let applied = |base_offset, high_watermark| Applied {
        base_offset,
        high_watermark,
        group: None,
    };
    assert_eq!(
        replies,
        [applied(0, 0), applied(0, 0), applied(0, 3), applied(3, 5)]
    );
    assert_eq!(state_machine.high_watermark(), 5);
    let (last_applied, last_membership) = state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, 3)));
    assert_eq!(last_membership.log_id(), &Some(log_id(0, 0)));
}

async fn bytes_of(mut data: Box<super::bundle::SnapshotData>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.unwrap();
    bytes
}

#[tokio::test]
async fn the_snapshot_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let built = {
        let (mut store, mut state_machine) = open(dir.path());
        store
            .blocking_append([membership(0, 0, &[1, 2]), write(1, 1, 4)])
            .await
            .unwrap();
        let committed = store.get_log_entries(0..2).await.unwrap();
        state_machine.apply(committed).await.unwrap();
        let mut builder = state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap()
    };
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 1)));

    let (_, mut state_machine) = open(dir.path());
    assert_eq!(state_machine.high_watermark(), 4);
    assert_eq!(
        state_machine.applied_state().await.unwrap(),
        (Some(log_id(1, 1)), built.meta.last_membership.clone())
    );
    let current = state_machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);
    assert_eq!(
        bytes_of(current.snapshot).await,
        bytes_of(built.snapshot).await
    );

    // Installed on another partition directory, it replaces that state machine's state and
    // rebuilds that log from the batches it carries.
    let other = tempfile::tempdir().unwrap();
    let (follower_store, mut follower) = open(other.path());
    let mut data = follower.begin_receiving_snapshot().await.unwrap();
    *data = *state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap()
        .snapshot;
    follower.install_snapshot(&built.meta, data).await.unwrap();
    assert_eq!(follower.high_watermark(), 4);
    let (leader_store, _) = open(dir.path());
    assert_eq!(
        follower_store.log().read_entries(0..10).unwrap(),
        leader_store.log().read_entries(0..10).unwrap()
    );
    assert_eq!(follower_store.log().read_entries(0..10).unwrap().len(), 2);
    let (_, mut reopened) = open(other.path());
    assert_eq!(
        reopened.applied_state().await.unwrap().0,
        Some(log_id(1, 1))
    );
}

/// A partition in `dir` with `entries` appended and applied, and a snapshot built after them:
/// its log store and the snapshot.
async fn snapshotted(
    dir: &Path,
    entries: Vec<PartitionEntry>,
) -> (PartitionLogStore, openraft::Snapshot<PartitionRaft>) {
    let (mut store, mut state_machine) = open(dir);
    let count = entries.len() as u64;
    store.blocking_append(entries).await.unwrap();
    let committed = store.get_log_entries(0..count).await.unwrap();
    state_machine.apply(committed).await.unwrap();
    let built = state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    (store, built)
}

/// A crash after a follower saved a snapshot from its leader but before it rebuilt its log
/// from the batches that came with it: opening the partition finishes the install. A bundle
/// whose install never got that far is dropped and leaves the log alone.
#[tokio::test]
async fn opening_finishes_a_snapshot_install_a_crash_cut_short() {
    use super::snapshot::{SnapshotStore, StoredSnapshot};
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![membership(0, 0, &[1, 2]), write(1, 1, 4), write(1, 2, 3)];
    let (store, built) = snapshotted(dir.path(), entries).await;
    let leader_entries = store.log().read_entries(0..10).unwrap();

    // A follower with a log of its own received the bundle and saved the snapshot, then died.
    let other = tempfile::tempdir().unwrap();
    {
        let (mut follower_store, _) = open(other.path());
        follower_store
            .blocking_append([write(1, 0, 1)])
            .await
            .unwrap();
    }
    let staged = built.snapshot.stage(other.path()).await.unwrap();
    let (header, _) = super::bundle::read_header(&staged).unwrap();
    let snapshots = SnapshotStore::open(other.path()).unwrap();
    snapshots
        .replace(StoredSnapshot::new(built.meta.clone(), header.state))
        .unwrap();
    drop(snapshots);
    let (follower_store, follower) = open(other.path());
    assert_eq!(follower.high_watermark(), 7);
    assert_eq!(
        follower_store.log().read_entries(0..10).unwrap(),
        leader_entries
    );
    assert!(!staged.exists());

    // A bundle of a later snapshot than the one saved never finished arriving: dropped.
    std::fs::write(&staged, b"SSBUNDL1\0\0\0\x05{").unwrap();
    drop((follower_store, follower));
    let (follower_store, _) = open(other.path());
    assert_eq!(
        follower_store.log().read_entries(0..10).unwrap(),
        leader_entries
    );
    assert!(!staged.exists());
}

/// A bundle whose batches do not check out is refused before anything changes: no snapshot
/// saved, the log as it was. A transfer that started over leaves nothing of the first try.
#[tokio::test]
async fn a_corrupt_snapshot_bundle_changes_nothing() {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![membership(0, 0, &[1, 2]), write(1, 1, 4)];
    let (_, built) = snapshotted(dir.path(), entries).await;
    let mut bundle = bytes_of(built.snapshot).await;
    let last = bundle.len() - 3;
    bundle[last] ^= 0x40; // inside the last batch's records: its CRC fails

    let other = tempfile::tempdir().unwrap();
    let (mut follower_store, mut follower) = open(other.path());
    follower_store
        .blocking_append([write(1, 0, 1)])
        .await
        .unwrap();
    let before = follower_store.log().read_entries(0..10).unwrap();
    let mut data = follower.begin_receiving_snapshot().await.unwrap();
    // A first try that got further than the second.
    data.write_all(&[7; 4096]).await.unwrap();
    data.seek(std::io::SeekFrom::Start(0)).await.unwrap();
    data.write_all(&bundle).await.unwrap();
    data.shutdown().await.unwrap();
    let refused = follower.install_snapshot(&built.meta, data).await;
    let error = refused.expect_err("a corrupt batch is refused").to_string();
    assert!(error.contains("batch at byte"), "{error}");
    assert!(follower.get_current_snapshot().await.unwrap().is_none());
    assert_eq!(follower_store.log().read_entries(0..10).unwrap(), before);
    assert_eq!(follower.high_watermark(), 0);
}

#[tokio::test]
async fn a_log_purged_past_its_end_restarts_empty_and_continues_after_the_purge() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, _) = open(dir.path());
        store
            .blocking_append([membership(0, 0, &[1]), write(1, 1, 2)])
            .await
            .unwrap();
        store.purge(log_id(3, 7)).await.unwrap();
        // An entry at or below the purge point is already covered by a snapshot: skipped.
        store.blocking_append([write(1, 2, 1)]).await.unwrap();
    }
    let (mut store, _) = open(dir.path());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 7)));
    assert_eq!(state.last_log_id, Some(log_id(3, 7)));
    assert!(store.try_get_log_entries(..).await.unwrap().is_empty());

    store.blocking_append([write(3, 8, 1)]).await.unwrap();
    let read = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(log_ids(&read), [log_id(3, 8)]);
    assert_eq!(offsets(&read), [(2, 3)]);
}

#[tokio::test]
async fn entries_spanning_many_segments_truncate_purge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = || LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let open_small = || {
        let log = Log::open(Arc::new(FileStorage), dir.path(), config()).unwrap();
        PartitionLogStore::new(Arc::new(log))
    };
    let mut store = open_small();
    store
        .blocking_append([membership(1, 0, &[1])])
        .await
        .unwrap();
    for index in 1..=60 {
        let entry = if index % 7 == 0 {
            entry(1, index, EntryPayload::Blank)
        } else {
            write(1, index, 3)
        };
        store.blocking_append([entry]).await.unwrap();
    }
    assert!(store.log().state().segment_count > 5);
    let all = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(all.len(), 61);

    store.truncate(log_id(1, 23)).await.unwrap();
    store.blocking_append([write(2, 23, 1)]).await.unwrap();
    store.purge(log_id(1, 9)).await.unwrap();
    let kept = offsets(&all[10..23]);
    let end = kept.last().unwrap().1;
    let expected = [kept, vec![(end, end + 1)]].concat();
    drop(store);

    let mut store = open_small();
    let read = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(log_ids(&read).first(), Some(&log_id(1, 10)));
    assert_eq!(log_ids(&read).last(), Some(&log_id(2, 23)));
    assert_eq!(offsets(&read), expected);
    let dense = offsets(&read).windows(2).all(|w| w[0].1 == w[1].0);
    assert!(dense, "offsets are not dense: {:?}", offsets(&read));
}

/// A data batch of `records` records from idempotent producer `id` (epoch 0), first sequence
/// `sequence`.
fn produced(term: u64, index: u64, id: i64, sequence: i32, records: usize) -> PartitionEntry {
    let mut batch = RecordBatch::from_records(
        (0..records).map(|_| (None, Some(Bytes::from_static(b"paid")), 1_700_000_000_000)),
    );
    batch.producer = sidestream_log::batch::ProducerState {
        producer_id: id,
        producer_epoch: 0,
        base_sequence: sequence,
    };
    let bytes = Bytes::from(batch.encode().unwrap());
    entry(
        term,
        index,
        EntryPayload::Normal(PartitionWrite::from(bytes)),
    )
}

#[tokio::test]
async fn every_replica_knows_the_producers_of_the_applied_batches_and_snapshots_them() {
    use crate::topics::producers::Sequence;
    let producer = |sequence| sidestream_log::batch::ProducerState {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: sequence,
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, mut state_machine) = open(dir.path());
        store
            .blocking_append([
                membership(0, 0, &[1]),
                produced(1, 1, 7, 0, 3),
                produced(1, 2, 7, 3, 2),
            ])
            .await
            .unwrap();
        let committed = store.get_log_entries(0..3).await.unwrap();
        state_machine.apply(committed).await.unwrap();
        let producers = &state_machine.state().producers;
        assert_eq!(producers.check(producer(5)), Sequence::Append);
        assert_eq!(producers.check(producer(3)), Sequence::Duplicate((3, 5)));
        assert_eq!(
            producers.check(producer(6)),
            Sequence::Early { expected: 5 }
        );
        let mut builder = state_machine.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
    }
    // A restarted replica starts from the snapshot: the table is there without replaying.
    let (_, state_machine) = open(dir.path());
    let producers = &state_machine.state().producers;
    assert_eq!(producers.check(producer(0)), Sequence::Duplicate((0, 3)));
    assert_eq!(producers.check(producer(5)), Sequence::Append);
}

#[test]
fn a_snapshot_without_a_producer_table_reads_as_an_empty_one() {
    let old = r#"{"last_applied":null,"last_membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"high_watermark":12}"#;
    let state: super::PartitionState = serde_json::from_str(old).unwrap();
    assert_eq!(state.high_watermark, 12);
    assert_eq!(
        state.producers,
        crate::topics::producers::Producers::default()
    );
}
