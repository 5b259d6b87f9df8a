//! Tests of the log: behaviour (`basic`), a model check under random operations (`model`),
//! and crash consistency with a fault-injecting file layer (`crash`).

mod basic;
mod crash;
mod fixture;
mod model;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;

use crate::batch::{ControlKind, RecordBatch};
use crate::config::{Clock, FsyncPolicy, LogConfig};
use crate::log::Log;
use crate::storage::Storage;

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub(super) struct ManualClock(AtomicI64);

impl ManualClock {
    pub(super) fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An encoded data batch of `records` records with `value_len`-byte values, stamped with
/// `timestamp` (each record one ms later than the one before), tagged by `tag`.
pub(super) fn data_batch(records: u32, value_len: usize, timestamp: i64, tag: u8) -> Vec<u8> {
    RecordBatch::from_records((0..records).map(|i| {
        (
            Some(Bytes::from(format!("key-{tag}-{i}"))),
            Some(Bytes::from(vec![tag; value_len])),
            timestamp + i64::from(i),
        )
    }))
    .encode()
    .unwrap()
}

pub(super) fn control_batch(timestamp: i64) -> Vec<u8> {
    RecordBatch::control(ControlKind::Blank, timestamp, Bytes::new())
        .encode()
        .unwrap()
}

pub(super) fn config(fsync: FsyncPolicy, segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        fsync,
        ..LogConfig::default()
    }
}

pub(super) fn open(storage: &Arc<impl Storage + 'static>, config: &LogConfig) -> Log {
    Log::open(storage.clone(), Path::new("/p/orders-0"), config.clone()).unwrap()
}
