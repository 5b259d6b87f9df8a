//! What Raft needs of the log beyond appending: entries by Raft index, cutting a divergent
//! suffix, purging a prefix, starting over after a snapshot, and the vote and committed index.
//!
//! Offsets under Raft: a data batch's base offset is the log's next offset when it is
//! appended, so replicas whose logs agree up to an entry agree on its offsets. Cutting a suffix
//! gives its offsets back; control entries (blank, membership) take a Raft index but no offset.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::error::{ReadError, WriteError};
use super::{Log, Shared, lock, read, write};
use crate::batch::RaftLogId;
use crate::config::FsyncPolicy;
use crate::meta_file::{self, LogStart, RaftVote};
use crate::segment::{self, Segment};

impl Log {
    /// The batches whose Raft indexes lie in `range` and that are not purged, in order.
    ///
    /// Indexes the log does not hold are skipped, so the result may be shorter than the range.
    pub fn read_entries(&self, range: Range<u64>) -> Result<Vec<Bytes>, ReadError> {
        let state = self.state();
        let start = range
            .start
            .max(state.last_purged.map_or(0, |p| p.index + 1));
        if start >= range.end {
            return Ok(Vec::new());
        }
        let segments = self.shared.segments();
        let first = segments
            .partition_point(|s| s.meta().first_raft_index.is_some_and(|f| f <= start))
            .saturating_sub(1);
        let mut entries = Vec::new();
        for segment in &segments[first..] {
            if segment
                .meta()
                .first_raft_index
                .is_some_and(|f| f >= range.end)
            {
                break;
            }
            let found = segment
                .read_raft_range(start, range.end)
                .map_err(|d| d.into_read_error(segment.path().to_path_buf()))?;
            entries.extend(found.into_iter().map(|b| b.bytes));
        }
        Ok(entries)
    }

    /// Removes every entry with Raft index `raft_index` or higher (a follower's divergent
    /// suffix); their offsets are given back. Entries below the log's first are not touched.
    pub fn truncate_from(&self, raft_index: u64) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let _writer = lock(&shared.writer);
        if shared.durability.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        let state = *read(&shared.state);
        if state.last.is_none_or(|last| raft_index > last.index) {
            return Ok(());
        }
        let segments = shared.segments();
        let keep = segments
            .partition_point(|s| s.meta().first_raft_index.is_some_and(|f| f < raft_index))
            .max(1);
        let target = &segments[keep - 1];
        let found = target
            .read_raft_range(raft_index, u64::MAX)
            .map_err(|d| d.into_write_error(target.path().to_path_buf()))?;
        let (position, next_offset) = match found.first() {
            Some(b) => (b.position, b.header.base_offset),
            None => (target.size(), target.meta().next_offset),
        };
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { path, source }
        };
        let result = (|| {
            for s in &segments[keep..] {
                Segment::remove_files(shared.storage.as_ref(), &shared.dir, s.base_offset())
                    .map_err(io(s.path()))?;
            }
            segment::remove_indexes(shared.storage.as_ref(), &shared.dir, target.base_offset())
                .map_err(io(&shared.dir))?;
            target
                .truncate(position, shared.config.index_interval_bytes)
                .map_err(|d| d.into_write_error(target.path().to_path_buf()))?;
            if shared.config.fsync != FsyncPolicy::Never {
                target.file().sync_data().map_err(io(target.path()))?;
                shared
                    .storage
                    .sync_dir(&shared.dir)
                    .map_err(io(&shared.dir))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            shared.durability.poison();
            return Err(e);
        }
        let kept: Vec<Arc<Segment>> = segments[..keep].to_vec();
        let last = kept
            .iter()
            .rev()
            .find_map(|s| s.meta().last_raft)
            .filter(|l| state.last_purged.is_none_or(|p| l.index > p.index));
        let size_bytes = kept.iter().map(|s| s.size()).sum();
        let segment_count = kept.len();
        *write(&shared.segments) = Arc::new(kept);
        let mut state = write(&shared.state);
        state.next_offset = next_offset;
        state.last = last;
        state.size_bytes = size_bytes;
        state.segment_count = segment_count;
        tracing::debug!(raft_index, next_offset, "truncated log suffix");
        Ok(())
    }

    /// Purges every entry up to and including Raft entry `through`: reads no longer return
    /// them, the log start moves past them, and segments holding only purged entries are
    /// deleted. Purging past the last entry empties the log; appends then continue after
    /// `through`.
    pub fn purge_through(&self, through: RaftLogId) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let _writer = lock(&shared.writer);
        if shared.durability.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        let state = *read(&shared.state);
        if state.last_purged.is_some_and(|p| p.index >= through.index) {
            return Ok(());
        }
        let segments = shared.segments();
        let everything = state.last.is_none_or(|l| through.index >= l.index);
        let first_present = segments.iter().find_map(|s| s.meta().first_raft_index);
        let start_offset = if everything {
            state.next_offset
        } else if first_present.is_some_and(|f| through.index < f) {
            state.start_offset
        } else {
            let found =
                locate(&segments, through.index).map_err(|(path, d)| d.into_write_error(path))?;
            let Some(header) = found else {
                return Err(WriteError::MissingEntry(through));
            };
            header.next_offset()
        };
        shared.replace_start(
            LogStart {
                start_offset,
                last_purged: Some(through),
            },
            everything,
        )
    }

    /// Empties the log and restarts it at `next_offset`, as if everything up to Raft entry
    /// `last_included` had been purged (installing a snapshot that is ahead of the log; with
    /// `None`, the next entry appended may have any index).
    pub fn reset(
        &self,
        next_offset: u64,
        last_included: Option<RaftLogId>,
    ) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let _writer = lock(&shared.writer);
        if shared.durability.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        write(&shared.state).next_offset = next_offset;
        shared.replace_start(
            LogStart {
                start_offset: next_offset,
                last_purged: last_included,
            },
            true,
        )
    }

    /// The log's batches from its first one through Raft entry `through`, as byte ranges of
    /// its segment files: what a follower that lacks the log's start is sent with a snapshot
    /// taken at `through`. The files stay readable through the prefix while it lives, even if
    /// retention deletes them meanwhile (it holds them open).
    ///
    /// Fails if the log does not hold `through` (nor has purged it: then the prefix is empty).
    pub fn raft_prefix(&self, through: u64) -> Result<RaftPrefix, ReadError> {
        // The state and the segments as one purge or retention pass left them.
        let _writer = lock(&self.shared.writer);
        let state = self.state();
        let segments = self.shared.segments();
        let mut prefix = RaftPrefix {
            start_offset: state.start_offset,
            prev: state.last_purged,
            parts: Vec::new(),
            len: 0,
        };
        let first = state.last_purged.map_or(0, |p| p.index + 1);
        if through < first {
            return if state.last_purged.is_some() {
                Ok(prefix)
            } else {
                Err(ReadError::MissingEntry(through))
            };
        }
        let damaged = |segment: &Segment| {
            let path = segment.path().to_path_buf();
            move |d: segment::Damage| d.into_read_error(path)
        };
        let mut found_last = false;
        for segment in segments.iter() {
            let meta = segment.meta().clone();
            let (Some(seg_first), Some(seg_last)) = (meta.first_raft_index, meta.last_raft) else {
                continue;
            };
            if seg_last.index < first {
                continue;
            }
            if seg_first > through {
                break;
            }
            let start = if seg_first < first {
                segment
                    .locate_raft_index(first)
                    .map_err(damaged(segment))?
                    .ok_or(ReadError::MissingEntry(first))?
                    .position
            } else {
                0
            };
            let last = seg_last.index.min(through);
            let Some(end) = segment.locate_raft_index(last).map_err(damaged(segment))? else {
                return Err(ReadError::MissingEntry(last));
            };
            let end = end.position + u64::from(end.header.length);
            prefix.parts.push(PrefixPart {
                file: Arc::clone(segment.file()),
                start,
                len: end - start,
            });
            prefix.len += end - start;
            if last == through {
                found_last = true;
                break;
            }
        }
        if found_last {
            Ok(prefix)
        } else {
            Err(ReadError::MissingEntry(through))
        }
    }

    /// Durably records a vote (after making every earlier append durable, so the vote never
    /// overtakes the entries before it).
    pub fn save_vote(&self, vote: RaftVote) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let _writer = lock(&shared.writer);
        self.sync().map_err(|_| WriteError::Poisoned)?;
        meta_file::write(
            shared.storage.as_ref(),
            &shared.dir,
            meta_file::VOTE_FILE,
            &vote.encode(),
        )
        .map_err(|source| shared.meta_write_failed(meta_file::VOTE_FILE, source))?;
        *write(&shared.vote) = Some(vote);
        Ok(())
    }

    /// The last saved vote.
    pub fn vote(&self) -> Option<RaftVote> {
        *read(&self.shared.vote)
    }

    /// Durably records the last committed Raft entry.
    ///
    /// Appends go on meanwhile: the file's fsync waits for nothing of theirs, and a concurrent
    /// call waits for this one (the latest call's entry is the one left).
    pub fn save_committed(&self, committed: Option<RaftLogId>) -> Result<(), WriteError> {
        let shared = &*self.shared;
        let mut saved = write(&shared.committed);
        if shared.durability.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        meta_file::write(
            shared.storage.as_ref(),
            &shared.dir,
            meta_file::COMMITTED_FILE,
            &meta_file::encode_raft_id(committed),
        )
        .map_err(|source| shared.meta_write_failed(meta_file::COMMITTED_FILE, source))?;
        *saved = committed;
        Ok(())
    }

    /// The last saved committed Raft entry (once a save in progress is done).
    pub fn committed(&self) -> Option<RaftLogId> {
        *read(&self.shared.committed)
    }
}

impl Shared {
    fn meta_write_failed(&self, name: &str, source: std::io::Error) -> WriteError {
        self.durability.poison();
        WriteError::Io {
            path: self.dir.join(name),
            source,
        }
    }

    /// Persists a new log start, then deletes the segments it leaves behind (all of them with
    /// `everything`, replaced by an empty one at the new start). The caller holds the writer
    /// lock.
    pub(super) fn replace_start(
        &self,
        start: LogStart,
        everything: bool,
    ) -> Result<(), WriteError> {
        meta_file::write(
            self.storage.as_ref(),
            &self.dir,
            meta_file::LOG_START_FILE,
            &start.encode(),
        )
        .map_err(|source| self.meta_write_failed(meta_file::LOG_START_FILE, source))?;
        let segments = self.segments();
        let purged_index = start.last_purged.map(|p| p.index);
        let (drop, keep): (Vec<_>, Vec<_>) = if everything {
            (segments.to_vec(), Vec::new())
        } else {
            let n = segments[..segments.len() - 1]
                .iter()
                .take_while(|s| {
                    s.meta()
                        .last_raft
                        .zip(purged_index)
                        .is_some_and(|(l, p)| l.index <= p)
                })
                .count();
            (segments[..n].to_vec(), segments[n..].to_vec())
        };
        let result = (|| {
            for s in &drop {
                Segment::remove_files(self.storage.as_ref(), &self.dir, s.base_offset())
                    .map_err(|e| (s.path().to_path_buf(), e))?;
            }
            let mut keep = keep;
            if keep.is_empty() {
                let segment = Segment::create(
                    self.storage.as_ref(),
                    &self.dir,
                    start.start_offset,
                    self.config.clock.now_ms(),
                )
                .map_err(|e| (self.dir.clone(), e))?;
                keep.push(Arc::new(segment));
            }
            if !drop.is_empty() {
                self.storage
                    .sync_dir(&self.dir)
                    .map_err(|e| (self.dir.clone(), e))?;
            }
            Ok::<_, (PathBuf, std::io::Error)>(keep)
        })();
        let keep = match result {
            Ok(keep) => keep,
            Err((path, source)) => {
                self.durability.poison();
                return Err(WriteError::Io { path, source });
            }
        };
        let size_bytes = keep.iter().map(|s| s.size()).sum();
        let segment_count = keep.len();
        *write(&self.segments) = Arc::new(keep);
        let mut state = write(&self.state);
        state.start_offset = start.start_offset;
        state.last_purged = start.last_purged;
        if everything {
            state.last = None;
            state.next_offset = start.start_offset;
        }
        state.size_bytes = size_bytes;
        state.segment_count = segment_count;
        Ok(())
    }
}

/// The header of the batch with Raft index `raft_index`, if the log holds it.
fn locate(
    segments: &[Arc<Segment>],
    raft_index: u64,
) -> Result<Option<crate::batch::BatchHeader>, (PathBuf, segment::Damage)> {
    let i = segments
        .partition_point(|s| s.meta().first_raft_index.is_some_and(|f| f <= raft_index))
        .saturating_sub(1);
    let Some(segment) = segments.get(i) else {
        return Ok(None);
    };
    segment
        .locate_raft_index(raft_index)
        .map(|b| b.map(|b| b.header))
        .map_err(|d| (segment.path().to_path_buf(), d))
}

/// A prefix of a log's batches (see [`Log::raft_prefix`]): byte ranges of segment files, read
/// as one run of whole batches.
#[derive(Debug, Clone)]
pub struct RaftPrefix {
    /// The offset of the prefix's first batch (the log's start offset).
    pub start_offset: u64,
    /// The Raft entry before the prefix's first one (the log's last purged), if any.
    pub prev: Option<RaftLogId>,
    parts: Vec<PrefixPart>,
    len: u64,
}

#[derive(Debug, Clone)]
struct PrefixPart {
    file: Arc<dyn crate::StorageFile>,
    start: u64,
    len: u64,
}

impl RaftPrefix {
    /// The prefix's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the prefix holds no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads into `buf` from byte `pos` of the prefix; returns 0 at its end.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        let mut skipped = 0;
        for part in &self.parts {
            if pos < skipped + part.len {
                let within = pos - skipped;
                let room = usize::try_from(part.len - within).unwrap_or(usize::MAX);
                let want = buf.len().min(room);
                crate::storage::read_exact_at(
                    part.file.as_ref(),
                    &mut buf[..want],
                    part.start + within,
                )?;
                return Ok(want);
            }
            skipped += part.len;
        }
        Ok(0)
    }
}
