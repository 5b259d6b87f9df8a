//! Writes the storage-format fixture `sidecar/test_fixture/v<N>/orders-0` that the log's
//! backward-compatibility test opens. Run it only when the format version changes (a
//! `format:` commit), into a new `v<N>` directory:
//!
//! ```sh
//! cargo run -p sidestream-log --example write_fixture -- sidecar/test_fixture/v2/orders-0
//! ```
#![allow(
    clippy::print_stdout,
    reason = "a developer tool that reports what it wrote"
)]

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use sidestream_log::batch::{ProducerState, RecordHeader};
use sidestream_log::{
    BatchBody, ControlKind, FileStorage, FsyncPolicy, Log, LogConfig, RaftLogId, RaftVote,
    RecordBatch,
};

fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args().nth(1) else {
        bail!("usage: write_fixture <empty directory>");
    };
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{dir} is not empty");
    }
    let config = LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    };
    let log = Log::open(Arc::new(FileStorage), &dir, config).context("open")?;
    let t0 = 1_700_000_000_000;
    let blank = RecordBatch::control(ControlKind::Blank, t0, Bytes::new());
    log.append_entry(&blank.encode()?, RaftLogId { term: 1, index: 0 })?;
    for i in 0..12 {
        log.append(&fixture_batch(i).encode()?)?;
    }
    let membership = RecordBatch::control(
        ControlKind::Membership,
        t0 + 20_000,
        Bytes::from_static(b"{\"fixture\":true}"),
    );
    log.append_entry(&membership.encode()?, RaftLogId { term: 2, index: 13 })?;
    for i in 12..14 {
        log.append(&fixture_batch(i).encode()?)?;
    }
    log.save_vote(RaftVote {
        term: 2,
        node_id: Some(1),
        committed: true,
    })?;
    log.save_committed(Some(RaftLogId { term: 2, index: 14 }))?;
    log.purge_through(RaftLogId { term: 1, index: 2 })?;
    let state = log.state();
    log.close()?;
    println!("wrote {dir}: {state:?}");
    Ok(())
}

/// Batch `i` of the fixture: three records keyed `order-<i>-<j>`, one header each, and
/// idempotent-producer fields on odd batches. The fixture test rebuilds the same batches.
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
            base_sequence: i32::try_from(i * 3).unwrap_or(i32::MAX),
        };
    }
    batch
}
