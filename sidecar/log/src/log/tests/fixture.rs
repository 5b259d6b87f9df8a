//! Opens the storage-format fixture of every released version (`sidecar/test_fixture/vN/`,
//! written by `examples/write_fixture.rs`) and checks that it reads back exactly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{
    self, BatchBody, ControlKind, ProducerState, RaftLogId, RecordBatch, RecordHeader,
};
use crate::config::{FsyncPolicy, LogConfig};
use crate::log::{Log, LogState};
use crate::meta_file::RaftVote;
use crate::storage::FileStorage;

/// Batch `i` of the fixture, as `examples/write_fixture.rs` builds it.
fn fixture_batch(i: u32) -> RecordBatch {
    let t0 = 1_700_000_000_000;
    let mut batch = RecordBatch::from_records((0..3).map(|j| {
        (
            Some(Bytes::from(format!("order-{i}-{j}"))),
            Some(Bytes::from(format!("placed {i}.{j}"))),
            t0 + i64::from(i) * 1_000 + i64::from(j),
        )
    }));
    if let BatchBody::Records(records) = &mut batch.body {
        for r in records {
            r.headers.push(RecordHeader {
                key: "type".into(),
                value: Bytes::from_static(b"shop.OrderPlaced.v1"),
            });
        }
    }
    if i % 2 == 1 {
        batch.producer = ProducerState {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: i32::try_from(i * 3).unwrap(),
        };
    }
    batch
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn opens_the_v1_fixture() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test_fixture/v1/orders-0");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("orders-0");
    copy_dir(&fixture, &dir);
    let config = LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    let log = Log::open(Arc::new(FileStorage), &dir, config).unwrap();
    assert_eq!(
        log.state(),
        LogState {
            start_offset: 6,
            next_offset: 42,
            last_purged: Some(RaftLogId { term: 1, index: 2 }),
            last: Some(RaftLogId { term: 2, index: 15 }),
            size_bytes: 2826,
            segment_count: 6,
        }
    );
    assert_eq!(
        log.vote(),
        Some(RaftVote {
            term: 2,
            node_id: Some(1),
            committed: true
        })
    );
    assert_eq!(log.committed(), Some(RaftLogId { term: 2, index: 14 }));

    // Every data batch, stamped with its offset and Raft id.
    let fetched = log.read(6, 1 << 20).unwrap();
    assert_eq!(fetched.next_offset, 42);
    let expected: Vec<Bytes> = (2..14)
        .map(|i| {
            let mut batch = fixture_batch(i);
            batch.base_offset = u64::from(i) * 3;
            let index = if i < 12 {
                u64::from(i) + 1
            } else {
                u64::from(i) + 2
            };
            batch.raft = RaftLogId {
                term: if i < 12 { 1 } else { 2 },
                index,
            };
            Bytes::from(batch.encode().unwrap())
        })
        .collect();
    assert_eq!(fetched.batches, expected);

    // The membership entry is a control batch between them.
    let entries = log.read_entries(13..14).unwrap();
    let control = RecordBatch::decode(&entries[0]).unwrap();
    match control.body {
        BatchBody::Control(c) => {
            assert_eq!(c.kind, ControlKind::Membership);
            assert_eq!(&c.payload[..], b"{\"fixture\":true}");
        }
        BatchBody::Records(_) => panic!("entry 13 is not a control batch"),
    }
    assert_eq!(batch::validate(&entries[0]).unwrap().base_offset, 36);
    assert_eq!(
        log.offset_for_timestamp(1_700_000_005_001).unwrap(),
        Some(16)
    );
}
