use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ManualClock, config, control_batch, data_batch, open};
use crate::batch::{self, BatchBody, BatchHeader, RaftLogId, RecordBatch};
use crate::config::{FsyncPolicy, LogConfig};
use crate::log::{AppendError, Log, OpenError, ReadError, SyncError};
use crate::meta_file::RaftVote;
use crate::storage::fault::{FaultStorage, Tail};
use crate::storage::{FileStorage, Storage};

fn offsets_of(log: &Log, from: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut at = from;
    loop {
        let fetched = log.read(at, 1 << 20).unwrap();
        if fetched.batches.is_empty() {
            return offsets;
        }
        for bytes in &fetched.batches {
            let header = batch::validate(bytes).unwrap();
            offsets.extend(header.base_offset..header.next_offset());
        }
        at = fetched.next_offset;
    }
}

#[test]
fn appends_get_dense_offsets_and_read_back() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(&storage, &config(FsyncPolicy::Always, 1 << 20));
    let a = log.append(&data_batch(3, 10, 1_000, 1)).unwrap();
    let c = log.append(&control_batch(1_001)).unwrap();
    let b = log.append(&data_batch(2, 10, 1_002, 2)).unwrap();
    log.wait_durable(&b).unwrap();
    assert_eq!((a.base_offset, a.next_offset), (0, 3));
    assert_eq!((c.base_offset, c.next_offset), (3, 3));
    assert_eq!((b.base_offset, b.next_offset), (3, 5));
    assert_eq!([a.raft.index, c.raft.index, b.raft.index], [0, 1, 2]);

    // Reading from inside a batch returns the whole batch; control batches are skipped.
    let fetched = log.read(1, 1 << 20).unwrap();
    assert_eq!(fetched.batches.len(), 2);
    assert_eq!(fetched.next_offset, 5);
    let first = RecordBatch::decode(&fetched.batches[0]).unwrap();
    assert_eq!(first.base_offset, 0);
    assert_eq!(offsets_of(&log, 0), vec![0, 1, 2, 3, 4]);
    assert!(log.read(5, 100).unwrap().batches.is_empty());
    assert!(matches!(
        log.read(6, 100),
        Err(ReadError::OffsetOutOfRange {
            offset: 6,
            start: 0,
            end: 5
        })
    ));
}

#[test]
fn read_returns_at_least_one_batch_and_respects_max_bytes() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(&storage, &config(FsyncPolicy::Never, 1 << 20));
    for i in 0..10 {
        log.append(&data_batch(1, 500, 0, i)).unwrap();
    }
    assert_eq!(log.read(0, 1).unwrap().batches.len(), 1);
    let len = data_batch(1, 500, 0, 0).len();
    assert_eq!(log.read(0, 3 * len).unwrap().batches.len(), 3);
    assert_eq!(log.read(0, 3 * len + 1).unwrap().batches.len(), 3);
}

#[test]
fn read_committed_stops_at_the_high_watermark() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(&storage, &config(FsyncPolicy::Never, 1 << 20));
    for i in 0..4 {
        log.append(&data_batch(2, 50, 0, i)).unwrap();
    }
    // Batches end at 2, 4, 6, 8; a high watermark of 4 shows the first two only.
    let fetched = log.read_committed(0, 1 << 20, 4).unwrap();
    assert_eq!(fetched.batches.len(), 2);
    assert_eq!(fetched.next_offset, 4);
    let fetched = log.read_committed(3, 1 << 20, 4).unwrap();
    assert_eq!((fetched.batches.len(), fetched.next_offset), (1, 4));
    let at_end = log.read_committed(4, 1 << 20, 4).unwrap();
    assert_eq!((at_end.batches.len(), at_end.next_offset), (0, 4));
    assert!(matches!(
        log.read_committed(5, 1 << 20, 4),
        Err(ReadError::OffsetOutOfRange {
            offset: 5,
            start: 0,
            end: 4
        })
    ));
    assert_eq!(log.read_committed(0, 1 << 20, 8).unwrap().next_offset, 8);
}

#[test]
fn rolls_by_size_and_reopens_from_indexes_or_rebuilds_them() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 2_000);
    let log = open(&storage, &cfg);
    for i in 0..40 {
        log.append(&data_batch(2, 100, i64::from(i) * 10, 0))
            .unwrap();
    }
    let state = log.state();
    assert!(state.segment_count > 5, "{state:?}");
    log.close().unwrap();

    let dir = Path::new("/p/orders-0");
    let names: Vec<_> = storage.paths();
    let logs = names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count();
    let indexes = names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .count();
    assert_eq!(
        indexes,
        logs - 1,
        "every sealed segment has an index, the active one none"
    );

    let log = open(&storage, &cfg);
    assert_eq!(log.state(), state);
    assert_eq!(offsets_of(&log, 0), (0..80).collect::<Vec<_>>());
    drop(log);

    // Damaged or missing indexes are rebuilt from the log.
    let first_index = dir.join(format!("{:020}.index", 0));
    storage.corrupt(&first_index, 10);
    let second = names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "timeindex"))
        .nth(1)
        .unwrap()
        .clone();
    storage.remove(&second).unwrap();
    let log = open(&storage, &cfg);
    assert_eq!(log.state(), state);
    assert_eq!(offsets_of(&log, 37), (36..80).collect::<Vec<_>>());
}

#[test]
fn rolls_by_age() {
    let storage = Arc::new(FaultStorage::new());
    let clock = Arc::new(ManualClock::default());
    let cfg = LogConfig {
        segment_ms: 1_000,
        clock: clock.clone(),
        ..config(FsyncPolicy::Never, 1 << 30)
    };
    let log = open(&storage, &cfg);
    log.append(&data_batch(1, 10, 0, 0)).unwrap();
    clock.set(999);
    log.append(&data_batch(1, 10, 0, 0)).unwrap();
    assert_eq!(log.state().segment_count, 1);
    clock.set(1_000);
    log.append(&data_batch(1, 10, 0, 0)).unwrap();
    assert_eq!(log.state().segment_count, 2);
}

#[test]
fn finds_offsets_by_timestamp() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(&storage, &config(FsyncPolicy::Never, 1_500));
    // Batch i holds records at 100*i, 100*i+1, 100*i+2.
    for i in 0..30 {
        log.append(&data_batch(3, 50, i * 100, 0)).unwrap();
    }
    assert!(log.state().segment_count > 2);
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1).unwrap(), Some(1));
    assert_eq!(log.offset_for_timestamp(3).unwrap(), Some(3));
    assert_eq!(log.offset_for_timestamp(1_702).unwrap(), Some(53));
    assert_eq!(log.offset_for_timestamp(2_902).unwrap(), Some(89));
    assert_eq!(log.offset_for_timestamp(2_903).unwrap(), None);
}

#[test]
fn raft_entries_must_follow_on() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(&storage, &config(FsyncPolicy::Never, 1 << 20));
    log.append_entry(&control_batch(0), RaftLogId { term: 1, index: 5 })
        .unwrap();
    assert!(matches!(
        log.append_entry(&control_batch(0), RaftLogId { term: 1, index: 7 }),
        Err(AppendError::RaftIndex {
            expected: 6,
            got: 7
        })
    ));
    assert!(matches!(
        log.append_entry(&control_batch(0), RaftLogId { term: 0, index: 6 }),
        Err(AppendError::RaftTerm { last: 1, got: 0 })
    ));
    let next = log.append(&data_batch(1, 1, 0, 0)).unwrap();
    assert_eq!(next.raft, RaftLogId { term: 1, index: 6 });
    let entries = log.read_entries(0..100).unwrap();
    assert_eq!(entries.len(), 2);
}

#[test]
fn rejects_bad_batches_without_changing_the_log() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = LogConfig {
        max_batch_bytes: 1_000,
        ..config(FsyncPolicy::Always, 1 << 20)
    };
    let log = open(&storage, &cfg);
    let mut bad = data_batch(2, 10, 0, 0);
    bad[50] ^= 1;
    let err = log.append(&bad).unwrap_err();
    assert!(err.to_string().contains("bad crc"), "{err}");
    assert!(matches!(
        log.append(&data_batch(1, 2_000, 0, 0)),
        Err(AppendError::TooLarge { max: 1_000, .. })
    ));
    assert!(log.append(&[1, 2, 3]).is_err());
    assert_eq!(log.state().next_offset, 0);
    assert_eq!(log.state().size_bytes, 0);
}

#[test]
fn truncation_gives_offsets_back_across_segments() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1_000);
    let log = open(&storage, &cfg);
    for i in 0..20 {
        log.append_entry(&data_batch(2, 100, 0, 1), RaftLogId { term: 1, index: i })
            .unwrap();
    }
    assert!(log.state().segment_count > 3);
    log.truncate_from(7).unwrap();
    let state = log.state();
    assert_eq!(state.next_offset, 14);
    assert_eq!(state.last, Some(RaftLogId { term: 1, index: 6 }));
    let next = log
        .append_entry(&data_batch(1, 100, 0, 2), RaftLogId { term: 2, index: 7 })
        .unwrap();
    assert_eq!(next.base_offset, 14);
    drop(log);
    let log = open(&storage, &cfg);
    assert_eq!(log.state().next_offset, 15);
    assert_eq!(log.state().last, Some(RaftLogId { term: 2, index: 7 }));
    assert_eq!(offsets_of(&log, 0), (0..15).collect::<Vec<_>>());
    // Truncating everything leaves an empty log that starts where it started.
    log.truncate_from(0).unwrap();
    assert_eq!(log.state().next_offset, 0);
    assert_eq!(log.state().last, None);
    assert!(log.read_entries(0..100).unwrap().is_empty());
}

#[test]
fn purge_moves_the_start_and_survives_reopen() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1_000);
    let log = open(&storage, &cfg);
    for i in 0..20 {
        log.append(&data_batch(2, 100, 0, 1))
            .unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    let before = log.state().segment_count;
    log.purge_through(RaftLogId { term: 0, index: 9 }).unwrap();
    let state = log.state();
    assert_eq!(state.start_offset, 20);
    assert_eq!(state.last_purged, Some(RaftLogId { term: 0, index: 9 }));
    assert!(state.segment_count < before);
    assert!(matches!(
        log.read(19, 10),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.read_entries(0..100).unwrap().len(), 10);
    drop(log);
    let log = open(&storage, &cfg);
    assert_eq!(log.state(), state);
    assert_eq!(offsets_of(&log, 20), (20..40).collect::<Vec<_>>());

    // Purging past the end empties the log; appends continue after the purged entry.
    log.purge_through(RaftLogId { term: 3, index: 30 }).unwrap();
    let state = log.state();
    assert_eq!(
        (state.start_offset, state.next_offset, state.last),
        (40, 40, None)
    );
    let next = log.append(&data_batch(1, 1, 0, 0)).unwrap();
    assert_eq!(next.raft, RaftLogId { term: 3, index: 31 });
    assert_eq!(next.base_offset, 40);
}

#[test]
fn reset_restarts_the_log_at_a_snapshot() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1 << 20);
    let log = open(&storage, &cfg);
    log.append(&data_batch(2, 1, 0, 0)).unwrap();
    log.reset(500, Some(RaftLogId { term: 4, index: 70 }))
        .unwrap();
    let next = log
        .append_entry(&data_batch(1, 1, 0, 0), RaftLogId { term: 4, index: 71 })
        .unwrap();
    assert_eq!(next.base_offset, 500);
    drop(log);
    let log = open(&storage, &cfg);
    assert_eq!(log.state().start_offset, 500);
    assert_eq!(log.state().next_offset, 501);
}

/// Every batch in `bytes`, a run of whole batches.
fn split_batches(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let length = BatchHeader::parse(rest).unwrap().length as usize;
        batches.push(rest[..length].to_vec());
        rest = &rest[length..];
    }
    batches
}

#[test]
fn a_raft_prefix_rebuilds_the_log_elsewhere_at_the_same_offsets() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1_000);
    let log = open(&storage, &cfg);
    for i in 0..30 {
        let batch = if i % 7 == 3 {
            control_batch(0)
        } else {
            data_batch(2, 100, 0, 1)
        };
        log.append_entry(
            &batch,
            RaftLogId {
                term: 1 + i / 10,
                index: i,
            },
        )
        .unwrap();
    }
    log.purge_through(RaftLogId { term: 1, index: 8 }).unwrap();
    assert!(log.state().segment_count > 3);

    // Entries 9 to 24: from inside a segment, across several, to inside another.
    let prefix = log.raft_prefix(24).unwrap();
    assert_eq!(prefix.start_offset, log.state().start_offset);
    assert_eq!(prefix.prev, Some(RaftLogId { term: 1, index: 8 }));
    let mut bytes = vec![0; usize::try_from(prefix.len()).unwrap()];
    let mut pos = 0;
    while pos < bytes.len() {
        // Odd-sized reads cross the parts' ends.
        let end = (pos + 333).min(bytes.len());
        let n = prefix.read_at(&mut bytes[pos..end], pos as u64).unwrap();
        assert!(n > 0);
        pos += n;
    }
    assert_eq!(prefix.read_at(&mut [0; 8], prefix.len()).unwrap(), 0);
    let batches = split_batches(&bytes);
    let held: Vec<Vec<u8>> = log
        .read_entries(9..25)
        .unwrap()
        .iter()
        .map(|b| b.to_vec())
        .collect();
    assert_eq!(batches, held);

    // A follower's log rebuilt from it holds the same entries at the same offsets, and
    // takes the leader's next entry.
    let other = Arc::new(FaultStorage::new());
    let copy = open(&other, &cfg);
    copy.append(&data_batch(1, 1, 0, 9)).unwrap();
    copy.reset(prefix.start_offset, prefix.prev).unwrap();
    for batch in &batches {
        let header = BatchHeader::parse(batch).unwrap();
        let appended = copy.append_entry(batch, header.raft).unwrap();
        assert_eq!(appended.base_offset, header.base_offset);
    }
    let next = log.read_entries(25..26).unwrap().remove(0);
    copy.append_entry(&next, RaftLogId { term: 3, index: 25 })
        .unwrap();
    assert_eq!(
        copy.read_entries(0..26).unwrap(),
        log.read_entries(9..26).unwrap()
    );
    assert_eq!(copy.state().start_offset, log.state().start_offset);
    drop(copy);
    let copy = open(&other, &cfg);
    assert_eq!(copy.read_entries(0..26).unwrap().len(), 17);

    // Through the last purged entry: nothing to send; below it or past the end: an error.
    assert!(log.raft_prefix(8).unwrap().is_empty());
    assert!(matches!(
        log.raft_prefix(30),
        Err(ReadError::MissingEntry(30))
    ));
    let fresh = open(&Arc::new(FaultStorage::new()), &cfg);
    assert!(matches!(
        fresh.raft_prefix(0),
        Err(ReadError::MissingEntry(0))
    ));
}

#[test]
fn retention_deletes_old_and_excess_sealed_segments_only() {
    let storage = Arc::new(FaultStorage::new());
    let clock = Arc::new(ManualClock::default());
    let cfg = LogConfig {
        retention_ms: Some(10_000),
        clock: clock.clone(),
        ..config(FsyncPolicy::Always, 1_000)
    };
    let log = open(&storage, &cfg);
    for i in 0..30 {
        log.append(&data_batch(1, 100, i * 1_000, 0)).unwrap();
    }
    let before = log.state();
    clock.set(15_500);
    // Nothing above the high watermark goes, however old.
    assert_eq!(log.apply_retention(0).unwrap().segments, 0);
    let report = log.apply_retention(u64::MAX).unwrap();
    assert!(report.segments > 0);
    let after = log.state();
    assert_eq!(after.segment_count, before.segment_count - report.segments);
    assert_eq!(after.size_bytes, before.size_bytes - report.bytes);
    assert!(log.offset_for_timestamp(0).unwrap().unwrap() >= after.start_offset);
    // Everything is old now, but the active segment stays.
    clock.set(1_000_000);
    log.apply_retention(u64::MAX).unwrap();
    assert_eq!(log.state().segment_count, 1);
    assert_eq!(log.state().next_offset, 30);
    assert!(!offsets_of(&log, log.state().start_offset).is_empty());

    let log_by_size = over_its_size_limit();
    log_by_size.apply_retention(u64::MAX).unwrap();
    let state = log_by_size.state();
    assert!(state.size_bytes >= 3_000, "{state:?}");
    assert!(state.size_bytes < 4_000, "{state:?}");
}

/// A log of 1 000-byte segments holding 30 batches, limited to 3 000 bytes.
fn over_its_size_limit() -> Log {
    let storage = Arc::new(FaultStorage::new());
    let cfg = LogConfig {
        retention_bytes: Some(3_000),
        ..config(FsyncPolicy::Never, 1_000)
    };
    let log = open(&storage, &cfg);
    for _ in 0..30 {
        log.append(&data_batch(1, 100, 0, 0)).unwrap();
    }
    log
}

/// A replicated partition's retention: the entry retention names, purged through, leaves the
/// log as retention itself would have.
#[test]
fn purging_through_the_retention_point_deletes_what_retention_would() {
    let (by_retention, by_purge) = (over_its_size_limit(), over_its_size_limit());
    // Nothing goes above the high watermark.
    assert_eq!(by_purge.retention_point(0), None);
    let point = by_purge.retention_point(u64::MAX).unwrap();
    assert_eq!(by_purge.state(), by_retention.state());
    by_retention.apply_retention(u64::MAX).unwrap();
    by_purge.purge_through(point).unwrap();
    assert_eq!(by_purge.state(), by_retention.state());
    assert_eq!(by_purge.retention_point(u64::MAX), None);
}

#[test]
fn a_failed_fsync_poisons_the_log_until_reopened() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1 << 20);
    let log = open(&storage, &cfg);
    let a = log.append(&data_batch(1, 10, 0, 0)).unwrap();
    log.wait_durable(&a).unwrap();
    storage.fail_syncs(1);
    let b = log.append(&data_batch(1, 10, 0, 0)).unwrap();
    assert!(matches!(log.wait_durable(&b), Err(SyncError::Poisoned)));
    assert!(matches!(
        log.append(&data_batch(1, 10, 0, 0)),
        Err(AppendError::Poisoned)
    ));
    assert!(matches!(log.wait_durable(&a), Err(SyncError::Poisoned)));
    drop(log);
    let log = open(&storage, &cfg);
    let c = log.append(&data_batch(1, 10, 0, 0)).unwrap();
    log.wait_durable(&c).unwrap();
}

#[test]
fn interval_policy_syncs_in_the_background() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(
        &storage,
        &config(FsyncPolicy::Interval(Duration::from_millis(5)), 1 << 20),
    );
    let a = log.append(&data_batch(1, 10, 0, 0)).unwrap();
    log.wait_durable(&a).unwrap();
    let active = Path::new("/p/orders-0").join(format!("{:020}.log", 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while storage.unsynced_len(&active) > 0 {
        assert!(Instant::now() < deadline, "the flusher never synced");
        std::thread::sleep(Duration::from_millis(2));
    }
    let crashed = Arc::new(storage.crash(|_| Tail::Lost));
    let log = open(&crashed, &config(FsyncPolicy::Always, 1 << 20));
    assert_eq!(log.state().next_offset, 1);
}

#[test]
fn vote_and_committed_survive_reopen() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1 << 20);
    let log = open(&storage, &cfg);
    assert_eq!(log.vote(), None);
    let vote = RaftVote {
        term: 3,
        node_id: Some(2),
        committed: true,
    };
    log.save_vote(vote).unwrap();
    log.save_committed(Some(RaftLogId { term: 3, index: 9 }))
        .unwrap();
    let crashed = Arc::new(storage.crash(|_| Tail::Lost));
    let log = open(&crashed, &cfg);
    assert_eq!(log.vote(), Some(vote));
    assert_eq!(log.committed(), Some(RaftLogId { term: 3, index: 9 }));
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_an_error_naming_segment_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(FsyncPolicy::Always, 2_000);
    let log = Log::open(Arc::new(FileStorage), dir.path(), cfg.clone()).unwrap();
    let batch_len = data_batch(2, 100, 0, 0).len() as u64;
    for i in 0..30 {
        log.append(&data_batch(2, 100, i, 0)).unwrap();
    }
    log.close().unwrap();
    let sealed = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&sealed).unwrap();
    let position = 3 * batch_len;
    bytes[usize::try_from(position).unwrap() + 100] ^= 0x10;
    std::fs::write(&sealed, &bytes).unwrap();

    // Sealed with an intact index: opens without reading it, and the read reports the damage.
    let log = Log::open(Arc::new(FileStorage), dir.path(), cfg.clone()).unwrap();
    assert_eq!(log.read(0, 1).unwrap().batches.len(), 1);
    let err = log.read(6, 1 << 20).unwrap_err();
    match &err {
        ReadError::Corrupt {
            segment,
            position: at,
            ..
        } => {
            assert_eq!(segment, &sealed);
            assert_eq!(*at, position);
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("00000000000000000000.log"), "{message}");
    assert!(message.contains(&format!("byte {position}")), "{message}");
    // Reading before the damaged batch still works; nothing at or past it is served.
    let fetched = log.read(0, 1 << 20).unwrap_err();
    assert!(matches!(fetched, ReadError::Corrupt { .. }));
    drop(log);

    // Without its index the segment is scanned on open, and the damage is an open error.
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
    let err = Log::open(Arc::new(FileStorage), dir.path(), cfg).unwrap_err();
    match &err {
        OpenError::Corrupt {
            segment,
            position: at,
            ..
        } => {
            assert_eq!(segment, &sealed);
            assert_eq!(*at, position);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn group_commit_makes_concurrent_appends_durable() {
    let storage = Arc::new(FaultStorage::new());
    let log = open(&storage, &config(FsyncPolicy::Always, 1 << 20));
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let log = &log;
            s.spawn(move || {
                for _ in 0..50 {
                    let a = log.append(&data_batch(2, 20, 0, t)).unwrap();
                    log.wait_durable(&a).unwrap();
                }
            });
        }
    });
    let crashed = Arc::new(storage.crash(|_| Tail::Lost));
    let log = open(&crashed, &config(FsyncPolicy::Always, 1 << 20));
    assert_eq!(log.state().next_offset, 800);
    let mut per_tag = [0; 8];
    let mut at = 0;
    while at < 800 {
        let fetched = log.read(at, 1 << 20).unwrap();
        for bytes in &fetched.batches {
            let batch = RecordBatch::decode(&Bytes::clone(bytes)).unwrap();
            if let BatchBody::Records(records) = &batch.body {
                per_tag[usize::from(records[0].value.as_ref().unwrap()[0])] += records.len();
            }
        }
        at = fetched.next_offset;
    }
    assert_eq!(per_tag, [100; 8]);
}

#[test]
fn refuses_configurations_that_cannot_work() {
    let storage = Arc::new(FaultStorage::new());
    for cfg in [
        LogConfig {
            segment_bytes: 0,
            ..LogConfig::default()
        },
        LogConfig {
            segment_bytes: 1 << 33,
            ..LogConfig::default()
        },
        LogConfig {
            index_interval_bytes: 0,
            ..LogConfig::default()
        },
        LogConfig {
            max_batch_bytes: 1 << 30,
            ..LogConfig::default()
        },
    ] {
        let err = Log::open(storage.clone(), Path::new("/p/x"), cfg).unwrap_err();
        assert!(matches!(err, OpenError::InvalidConfig(_)), "{err}");
        assert!(
            err.to_string().starts_with("invalid log configuration"),
            "{err}"
        );
    }
}

#[test]
fn the_active_segment_reserves_disk_space_ahead_and_a_sealed_one_gives_it_back() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    // A file system that cannot reserve space (the log then writes without) proves nothing.
    let probe = std::fs::File::create(dir.path().join("probe")).unwrap();
    if rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::KEEP_SIZE, 0, 1 << 20).is_err() {
        return;
    }
    // A segment's length and the bytes allocated to it (none if a cut removed it).
    let on_disk = |base: u64| {
        std::fs::metadata(dir.path().join(format!("{base:020}.log")))
            .map_or((0, 0), |meta| (meta.len(), meta.blocks() * 512))
    };
    let cfg = config(FsyncPolicy::Always, 64 << 20);
    let log = Log::open(Arc::new(FileStorage), dir.path(), cfg).unwrap();
    for i in 0..10 {
        log.append(&data_batch(2, 100, i, 0)).unwrap();
    }
    let (len, allocated) = on_disk(0);
    assert!(len < 4096, "{len}");
    assert!(allocated >= 1 << 20, "{allocated} bytes allocated");

    // Past the first reservation: the next reaches the next power of two.
    let mut next = 0;
    for i in 0..5 {
        next = log
            .append(&data_batch(1, 4 << 20, 10 + i, 0))
            .unwrap()
            .next_offset;
    }
    assert!(on_disk(0).1 >= 32 << 20, "{:?}", on_disk(0));

    log.roll().unwrap();
    let (len, allocated) = on_disk(0);
    assert!(
        allocated < len + (1 << 20),
        "sealed: {len} bytes, {allocated} allocated"
    );
    let appended = log.append(&data_batch(2, 100, 20, 0)).unwrap();
    assert!(on_disk(next).1 >= 1 << 20, "{:?}", on_disk(next));

    // A cut frees what lay past it (here the whole new segment goes, and the sealed one is
    // active again); the next append reserves again.
    log.truncate_from(appended.raft.index).unwrap();
    assert!(on_disk(next).1 < 1 << 20, "{:?}", on_disk(next));
    log.append(&data_batch(2, 100, 30, 0)).unwrap();
    let active = if on_disk(next).0 > 0 { next } else { 0 };
    let (len, allocated) = on_disk(active);
    assert!(
        allocated >= len + (1 << 19),
        "{len} bytes, {allocated} allocated"
    );
}
