//! Sidestream's partition log: record batches in segments on disk, with indexes, recovery,
//! retention and what Raft needs to use the log as its own.
//!
//! Each partition of a topic is one [`Log`] in its own directory. The log stores
//! [`RecordBatch`]es in the byte format that also travels on the wire and to replicas
//! (`docs/STORAGE.md` has it byte by byte), in segment files named by their base offset, with
//! a sparse offset index and a time index per segment. It recovers from a crash by cutting the
//! active segment at its first torn or corrupt batch, and never serves a batch whose CRC fails.
//!
//! What it deliberately does not do: networking, async, or anything of Raft beyond storage.
//! It knows Raft terms and indexes (each batch is one Raft entry) but not openraft's types;
//! `sidestream-sidecar` adapts it to openraft's storage traits. All file IO goes through the
//! narrow [`Storage`] trait, so tests can inject faults and crashes.
//!
//! Central types: [`RecordBatch`] (encode/decode), [`Log`] (append, read, truncate, purge,
//! retention), [`LogConfig`] with [`FsyncPolicy`], and [`Storage`].
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use sidestream_log::{FileStorage, Log, LogConfig, RecordBatch};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(Arc::new(FileStorage), dir.path(), LogConfig::default())?;
//!
//! let batch = RecordBatch::from_records([
//!     (Some(Bytes::from("order-1")), Some(Bytes::from("placed")), 1_700_000_000_000),
//!     (Some(Bytes::from("order-2")), Some(Bytes::from("placed")), 1_700_000_000_001),
//! ]);
//! let appended = log.append(&batch.encode()?)?;
//! log.wait_durable(&appended)?; // group commit: one fdatasync for concurrent appenders
//! assert_eq!((appended.base_offset, appended.next_offset), (0, 2));
//!
//! let fetched = log.read(0, 1 << 20)?;
//! let read = RecordBatch::decode(&fetched.batches[0])?;
//! assert_eq!(read.base_offset, 0);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod batch;
mod config;
mod log;
mod meta_file;
mod offset_index;
mod segment;
mod storage;
mod time_index;
mod varint;

pub use batch::{
    BatchBody, BatchHeader, ControlKind, ControlRecord, RaftLogId, Record, RecordBatch,
};
pub use config::{Clock, FsyncPolicy, LogConfig, ParseFsyncPolicyError, SyncObserver, SystemClock};
pub use log::{
    AppendError, Appended, Corruption, Fetched, Log, LogState, OpenError, RaftPrefix, ReadError,
    RetentionReport, SyncError, WriteError,
};
pub use meta_file::RaftVote;
pub use storage::{FileStorage, Storage, StorageFile};

/// Position of an event in its partition: dense, starting at 0.
pub type Offset = u64;
