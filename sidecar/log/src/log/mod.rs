//! The partition log: an ordered sequence of segments, appended at the end, read anywhere.
//!
//! ```text
//!  dir/
//!    00000000000000000000.log        sealed segment   ┐ read with positional IO,
//!    00000000000000000000.index      its indexes      │ never written again
//!    00000000000000000000.timeindex                   ┘
//!    00000000000000052340.log        active segment: appends go here; indexes in memory
//!    log-start  raft-vote  raft-committed              small files, replaced atomically
//! ```
//!
//! [`Log`] documents its method families and their order.

mod durability;
mod error;
mod raft;
mod recovery;
mod retention;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

pub use error::{AppendError, Corruption, OpenError, ReadError, SyncError, WriteError};
pub use raft::RaftPrefix;
pub use retention::RetentionReport;

use crate::Offset;
use crate::batch::{BatchHeader, HEADER_LEN, RaftLogId, ValidBatch};
use crate::config::{FsyncPolicy, LogConfig};
use crate::meta_file::RaftVote;
use crate::segment::Segment;
use crate::storage::{Storage, StorageFile};
use durability::Durability;

/// A partition's durable, segmented log of record batches.
///
/// [`Log`]'s methods come in families, each safe to call from any thread:
/// - writing, serialized by one writer lock: [`Log::append`] / [`Log::append_entry`], then
///   [`Log::wait_durable`] (group commit) or [`Log::sync`]; [`Log::truncate_from`],
///   [`Log::purge_through`], [`Log::reset`], [`Log::roll`], [`Log::apply_retention`];
/// - reading, which never waits for the writer: [`Log::read`], [`Log::read_entries`],
///   [`Log::offset_for_timestamp`], [`Log::state`];
/// - Raft's small state: [`Log::save_vote`] / [`Log::vote`], [`Log::save_committed`] /
///   [`Log::committed`].
///
/// Call order: [`Log::open`] (recovers the tail), then any of the above, then
/// [`Log::close`] (syncs) or drop (does not).
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    flusher: Option<Flusher>,
}

/// Where the log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    /// First offset that can be read.
    pub start_offset: Offset,
    /// Offset the next data batch will take (the log end offset).
    pub next_offset: Offset,
    /// The last Raft entry removed from the front of the log, if any.
    pub last_purged: Option<RaftLogId>,
    /// The last Raft entry in the log, if the log holds any.
    pub last: Option<RaftLogId>,
    /// Bytes in all segments.
    pub size_bytes: u64,
    /// Number of segments.
    pub segment_count: usize,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record (for a control batch, the next offset).
    pub base_offset: Offset,
    /// Offset after the batch's last record.
    pub next_offset: Offset,
    /// The Raft entry the batch became.
    pub raft: RaftLogId,
    seq: u64,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Each batch's bytes, CRC-checked, in offset order.
    pub batches: Vec<Bytes>,
    /// The offset after the last returned batch (the offset asked for if none).
    pub next_offset: Offset,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    config: LogConfig,
    writer: Mutex<Writer>,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    state: RwLock<LogState>,
    durability: Durability,
    /// Segments sealed without a sync (fsync `never`), synced by the next [`Log::sync`].
    unsynced: Mutex<Vec<Arc<dyn StorageFile>>>,
    vote: RwLock<Option<RaftVote>>,
    committed: RwLock<Option<RaftLogId>>,
}

/// State only the writer touches.
#[derive(Debug)]
struct Writer {
    seq: u64,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering its tail.
    ///
    /// The active segment is read batch by batch and cut at the first torn or corrupt batch;
    /// sealed segments with intact indexes are opened from them, the others are scanned.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<Self, OpenError> {
        let shared = Arc::new(recovery::open(storage, dir.into(), config)?);
        let flusher = match shared.config.fsync {
            FsyncPolicy::Interval(every) => Some(Flusher::start(Arc::downgrade(&shared), every)),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(Self { shared, flusher })
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Where the log stands now.
    pub fn state(&self) -> LogState {
        *read(&self.shared.state)
    }

    /// Appends an encoded batch as the next Raft entry in the current term, assigning its base
    /// offset. The batch is visible to readers when this returns; with `FsyncPolicy::Always`,
    /// call [`Log::wait_durable`] before reporting it durable.
    pub fn append(&self, batch: &[u8]) -> Result<Appended, AppendError> {
        self.check_size(batch)?;
        self.append_inner(&ValidBatch::new(batch)?, None)
    }

    /// [`Log::append`] for a batch already validated, which is not checked again.
    pub fn append_valid(&self, batch: &ValidBatch<'_>) -> Result<Appended, AppendError> {
        self.check_size(batch.bytes())?;
        self.append_inner(batch, None)
    }

    fn check_size(&self, batch: &[u8]) -> Result<(), AppendError> {
        let max = self.shared.config.max_batch_bytes;
        if batch.len() > max {
            return Err(AppendError::TooLarge {
                size: batch.len(),
                max,
            });
        }
        Ok(())
    }

    /// Appends an encoded batch as the Raft entry `raft`, which must follow the log's last
    /// entry (or its last purged one) and not lower the term.
    pub fn append_entry(&self, batch: &[u8], raft: RaftLogId) -> Result<Appended, AppendError> {
        self.check_size(batch)?;
        self.append_inner(&ValidBatch::new(batch)?, Some(raft))
    }

    /// [`Log::append_entry`] for a batch already validated, which is not checked again.
    pub fn append_entry_valid(
        &self,
        batch: &ValidBatch<'_>,
        raft: RaftLogId,
    ) -> Result<Appended, AppendError> {
        self.check_size(batch.bytes())?;
        self.append_inner(batch, Some(raft))
    }

    fn append_inner(
        &self,
        valid: &ValidBatch<'_>,
        raft: Option<RaftLogId>,
    ) -> Result<Appended, AppendError> {
        let shared = &*self.shared;
        let batch = valid.bytes();
        let mut header = *valid.header();
        let mut writer = lock(&shared.writer);
        if shared.durability.is_poisoned() {
            return Err(AppendError::Poisoned);
        }
        let state = *read(&shared.state);
        let expected = state.last.or(state.last_purged).map(|last| last.index + 1);
        let raft = match raft {
            Some(raft) => {
                if expected.is_some_and(|e| e != raft.index) {
                    return Err(AppendError::RaftIndex {
                        expected: expected.unwrap_or(0),
                        got: raft.index,
                    });
                }
                if let Some(last) = state.last.filter(|last| raft.term < last.term) {
                    return Err(AppendError::RaftTerm {
                        last: last.term,
                        got: raft.term,
                    });
                }
                raft
            }
            None => RaftLogId {
                term: state.last.or(state.last_purged).map_or(0, |l| l.term),
                index: expected.unwrap_or(0),
            },
        };
        let mut active = shared.active();
        if shared.roll_due(&active, header.length) {
            active = shared.roll_locked(&writer).map_err(|e| {
                shared.durability.poison();
                append_io(e)
            })?;
        }
        header.base_offset = state.next_offset;
        header.raft = raft;
        let mut head = [0; HEADER_LEN];
        head.copy_from_slice(&batch[..HEADER_LEN]);
        BatchHeader::stamp(&mut head, header.base_offset, raft);
        if let Err(source) = active.append(
            &header,
            &head,
            &batch[HEADER_LEN..],
            (
                shared.config.index_interval_bytes,
                shared.config.segment_bytes,
            ),
        ) {
            shared.durability.poison();
            return Err(AppendError::Io {
                path: active.path().to_path_buf(),
                source,
            });
        }
        writer.seq += 1;
        let seq = writer.seq;
        {
            let mut state = write(&shared.state);
            state.next_offset = header.next_offset();
            state.last = Some(raft);
            state.size_bytes += u64::from(header.length);
        }
        shared.durability.appended(seq);
        Ok(Appended {
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
            raft,
            seq,
        })
    }

    /// Returns once `appended` is durable under the log's fsync policy: with `Always` after an
    /// `fdatasync` that covers it (shared with concurrent appends); with `Interval` and `Never`
    /// at once.
    pub fn wait_durable(&self, appended: &Appended) -> Result<(), SyncError> {
        match self.shared.config.fsync {
            FsyncPolicy::Always => self.shared.sync_through(appended.seq),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {
                if self.shared.durability.is_poisoned() {
                    Err(SyncError::Poisoned)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Makes everything appended so far durable, whatever the policy.
    pub fn sync(&self) -> Result<(), SyncError> {
        self.shared
            .sync_through(self.shared.durability.appended_seq())
    }

    /// Reads whole data batches starting with the one that holds `offset`, up to `max_bytes`
    /// (but at least one batch, however large, so a reader always progresses). Control batches
    /// are skipped. Reading at the log end returns no batches.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Fetched, ReadError> {
        let state = self.state();
        if offset < state.start_offset || offset > state.next_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                start: state.start_offset,
                end: state.next_offset,
            });
        }
        let segments = self.shared.segments();
        let first = segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        // Retention may have removed the segment between the state and the segment list.
        if segments.get(first).is_none_or(|s| s.base_offset() > offset) {
            let state = self.state();
            return Err(ReadError::OffsetOutOfRange {
                offset,
                start: state.start_offset,
                end: state.next_offset,
            });
        }
        let mut fetched = Fetched {
            batches: Vec::new(),
            next_offset: offset,
        };
        let mut total = 0;
        for segment in &segments[first..] {
            let found = segment
                .read_from_offset(
                    fetched.next_offset,
                    max_bytes.saturating_sub(total),
                    fetched.batches.is_empty(),
                    self.shared.config.index_interval_bytes,
                )
                .map_err(|d| d.into_read_error(segment.path().to_path_buf()))?;
            for batch in found {
                total += batch.bytes.len();
                fetched.next_offset = batch.header.next_offset();
                fetched.batches.push(batch.bytes);
            }
            // Stop where this segment still holds data that did not fit.
            if total >= max_bytes || fetched.next_offset < segment.meta().next_offset {
                break;
            }
        }
        Ok(fetched)
    }

    /// Like [`Log::read`], but returns only batches that end at or below `end` (a high
    /// watermark, always on a batch boundary): what a consumer may see. An `offset` past `end`
    /// is out of range, with `end` as the range's end.
    pub fn read_committed(
        &self,
        offset: Offset,
        max_bytes: usize,
        end: Offset,
    ) -> Result<Fetched, ReadError> {
        let start = self.state().start_offset;
        if offset > end || offset < start {
            return Err(ReadError::OffsetOutOfRange { offset, start, end });
        }
        if offset == end {
            return Ok(Fetched {
                batches: Vec::new(),
                next_offset: offset,
            });
        }
        let mut fetched = self.read(offset, max_bytes)?;
        if fetched.next_offset > end {
            let mut next = offset;
            let keep = fetched
                .batches
                .iter()
                .take_while(|batch| {
                    BatchHeader::parse(batch).is_ok_and(|header| {
                        let fits = header.next_offset() <= end;
                        if fits {
                            next = header.next_offset();
                        }
                        fits
                    })
                })
                .count();
            fetched.batches.truncate(keep);
            fetched.next_offset = next;
        }
        Ok(fetched)
    }

    /// The offset of the first record whose timestamp is at or after `timestamp` (ms), or
    /// `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, ReadError> {
        let start = self.state().start_offset;
        for segment in self.shared.segments().iter() {
            if segment.meta().max_timestamp < timestamp {
                continue;
            }
            let found = segment
                .offset_for_timestamp(timestamp)
                .map_err(|d| d.into_read_error(segment.path().to_path_buf()))?;
            if let Some(offset) = found {
                return Ok(Some(offset.max(start)));
            }
        }
        Ok(None)
    }

    /// Seals the active segment and starts a new one (if the active one holds data).
    pub fn roll(&self) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let writer = lock(&shared.writer);
        if shared.durability.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        let active = shared.active();
        if active.meta().next_offset == active.base_offset() {
            return Ok(());
        }
        shared
            .roll_locked(&writer)
            .map(drop)
            .map_err(|(path, source)| {
                shared.durability.poison();
                WriteError::Io { path, source }
            })
    }

    /// Syncs and closes the log.
    pub fn close(mut self) -> Result<(), SyncError> {
        self.flusher.take();
        self.sync()
    }
}

impl Shared {
    fn segments(&self) -> Arc<Vec<Arc<Segment>>> {
        read(&self.segments).clone()
    }

    fn active(&self) -> Arc<Segment> {
        let segments = read(&self.segments);
        segments
            .last()
            .cloned()
            .unwrap_or_else(|| unreachable!("a log always has an active segment"))
    }

    fn sync_through(&self, seq: u64) -> Result<(), SyncError> {
        self.durability.wait(
            seq,
            || {
                let sealed = std::mem::take(&mut *lock(&self.unsynced));
                for file in &sealed {
                    file.sync_data()?;
                }
                if !sealed.is_empty() {
                    self.storage.sync_dir(&self.dir)?;
                }
                self.active().file().sync_data()
            },
            self.config.sync_observer.as_deref(),
        )
    }

    fn roll_due(&self, active: &Segment, incoming: u32) -> bool {
        let meta = active.meta();
        if meta.next_offset == active.base_offset() {
            return false;
        }
        let size = active.size();
        size + u64::from(incoming) > self.config.segment_bytes
            || self.config.clock.now_ms().saturating_sub(meta.created_ms) >= self.config.segment_ms
    }

    /// Seals the active segment (sync, write its indexes) and opens a new one at the log end.
    /// The caller holds the writer lock.
    fn roll_locked(&self, _writer: &Writer) -> Result<Arc<Segment>, (PathBuf, std::io::Error)> {
        let active = self.active();
        let sync = self.config.fsync != FsyncPolicy::Never;
        let seq = self.durability.appended_seq();
        let at = |path: &Path| {
            let path = path.to_path_buf();
            move |e| (path, e)
        };
        if sync {
            active.file().sync_data().map_err(at(active.path()))?;
        }
        if let Err(error) = active.release_reservation() {
            // Only disk space is at stake: the segment's bytes and length are as written.
            tracing::warn!(path = %active.path().display(), %error, "cannot give back the disk space reserved for a sealed segment");
        }
        active
            .write_indexes(self.storage.as_ref(), &self.dir, sync)
            .map_err(at(&self.dir))?;
        let next = active.meta().next_offset;
        let segment = Arc::new(
            Segment::create(
                self.storage.as_ref(),
                &self.dir,
                next,
                self.config.clock.now_ms(),
            )
            .map_err(at(&self.dir))?,
        );
        if sync {
            self.storage.sync_dir(&self.dir).map_err(at(&self.dir))?;
            self.durability.synced_through(seq);
        } else {
            lock(&self.unsynced).push(active.file().clone());
        }
        let mut segments = write(&self.segments);
        let mut list = Vec::clone(&segments);
        list.push(segment.clone());
        *segments = Arc::new(list);
        write(&self.state).segment_count += 1;
        tracing::debug!(dir = %self.dir.display(), base_offset = next, "rolled segment");
        Ok(segment)
    }
}

fn append_io((path, source): (PathBuf, std::io::Error)) -> AppendError {
    AppendError::Io { path, source }
}

/// The background thread of `FsyncPolicy::Interval`; stops when dropped.
#[derive(Debug)]
struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(shared: Weak<Shared>, every: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sidestream-log-flush".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    let seq = shared.durability.appended_seq();
                    if shared.sync_through(seq).is_err() {
                        return;
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the log's flush thread; syncing on close only");
        }
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
