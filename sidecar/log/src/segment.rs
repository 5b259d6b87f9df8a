//! One segment: a `<base offset>.log` file of record batches and its two sparse indexes.
//!
//! A segment is appended to by one writer at a time (the log's writer lock) while any number of
//! readers read from it with positional reads. Readers see only bytes below `size`, which the
//! writer publishes after a batch is fully written, so they never observe a half-written batch.
//! Truncation (Raft's divergent suffix) takes `truncation` exclusively; readers hold it shared
//! while they read, so a read never races a shrinking file.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::Offset;
use crate::batch::{BatchHeader, DecodeError, HEADER_LEN, RaftLogId, RecordIter};
use crate::offset_index::{OffsetEntry, OffsetIndex, SegmentSummary};
use crate::storage::{Storage, StorageFile, read_exact_at};
use crate::time_index::{TimeEntry, TimeIndex};

#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: Offset,
    log_path: PathBuf,
    file: Arc<dyn StorageFile>,
    size: AtomicU64,
    /// How much of the file's disk space is reserved (see [`reserve`](Self::reserve)): 0 for
    /// none yet, `u64::MAX` once the file system refused.
    reserved: AtomicU64,
    meta: RwLock<SegmentMeta>,
    truncation: RwLock<()>,
}

/// What a segment knows about its batches, kept beside its file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub(crate) offsets: OffsetIndex,
    pub(crate) times: TimeIndex,
    pub(crate) next_offset: Offset,
    pub(crate) first_raft_index: Option<u64>,
    pub(crate) last_raft: Option<RaftLogId>,
    pub(crate) max_timestamp: i64,
    pub(crate) created_ms: i64,
    bytes_since_index: u64,
}

/// A batch found at a position while scanning a segment.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) position: u64,
    pub(crate) header: BatchHeader,
    pub(crate) bytes: Bytes,
}

/// Where and why a segment's bytes are not a valid batch.
#[derive(Debug)]
pub(crate) struct Damage {
    pub(crate) position: u64,
    pub(crate) reason: DamageReason,
}

#[derive(Debug)]
pub(crate) enum DamageReason {
    Decode(DecodeError),
    Io(io::Error),
    /// A batch whose offsets or Raft index do not follow the one before it.
    OutOfSequence(&'static str),
}

impl std::fmt::Display for DamageReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Decode(e) => e.fmt(f),
            Self::Io(e) => e.fmt(f),
            Self::OutOfSequence(what) => write!(f, "{what} out of sequence"),
        }
    }
}

impl SegmentMeta {
    fn empty(base_offset: Offset, created_ms: i64) -> Self {
        Self {
            offsets: OffsetIndex::default(),
            times: TimeIndex::default(),
            next_offset: base_offset,
            first_raft_index: None,
            last_raft: None,
            max_timestamp: i64::MIN,
            created_ms,
            bytes_since_index: u64::MAX,
        }
    }

    /// Records a batch appended at `position`.
    fn note(&mut self, position: u64, header: &BatchHeader, index_interval: u64) {
        if self.bytes_since_index >= index_interval {
            self.offsets.push(OffsetEntry {
                offset: header.base_offset,
                raft_index: header.raft.index,
                position,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index = self
            .bytes_since_index
            .saturating_add(u64::from(header.length));
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.times.push(TimeEntry {
            timestamp: self.max_timestamp,
            offset: header.base_offset,
            position,
        });
        self.next_offset = header.next_offset();
        self.first_raft_index.get_or_insert(header.raft.index);
        self.last_raft = Some(header.raft);
    }
}

impl Segment {
    pub(crate) fn log_name(base_offset: Offset) -> String {
        format!("{base_offset:020}.log")
    }

    pub(crate) fn index_path(dir: &Path, base_offset: Offset) -> PathBuf {
        dir.join(format!("{base_offset:020}.index"))
    }

    pub(crate) fn time_index_path(dir: &Path, base_offset: Offset) -> PathBuf {
        dir.join(format!("{base_offset:020}.timeindex"))
    }

    /// Creates an empty segment file.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
        created_ms: i64,
    ) -> io::Result<Self> {
        let log_path = dir.join(Self::log_name(base_offset));
        let file = storage.open(&log_path, true)?;
        file.set_len(0)?;
        Ok(Self::new(
            base_offset,
            log_path,
            file,
            0,
            SegmentMeta::empty(base_offset, created_ms),
        ))
    }

    fn new(
        base_offset: Offset,
        log_path: PathBuf,
        file: Arc<dyn StorageFile>,
        size: u64,
        meta: SegmentMeta,
    ) -> Self {
        Self {
            base_offset,
            log_path,
            file,
            size: AtomicU64::new(size),
            reserved: AtomicU64::new(0),
            meta: RwLock::new(meta),
            truncation: RwLock::new(()),
        }
    }

    /// Opens a sealed segment from its index files, if they are present, intact and describe
    /// the log file as it is. `None` means the segment must be scanned.
    pub(crate) fn open_indexed(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
    ) -> io::Result<Option<Self>> {
        let log_path = dir.join(Self::log_name(base_offset));
        let file = storage.open(&log_path, false)?;
        let size = file.len()?;
        let Some(index_bytes) = read_whole(storage, &Self::index_path(dir, base_offset))? else {
            return Ok(None);
        };
        let Some((offsets, summary)) = OffsetIndex::decode(&index_bytes, base_offset) else {
            return Ok(None);
        };
        if summary.log_size != size || size == 0 {
            return Ok(None);
        }
        let Some(time_bytes) = read_whole(storage, &Self::time_index_path(dir, base_offset))?
        else {
            return Ok(None);
        };
        let Some(times) = TimeIndex::decode(&time_bytes, base_offset, size) else {
            return Ok(None);
        };
        let Some(first_raft_index) = offsets.first().map(|e| e.raft_index) else {
            return Ok(None);
        };
        let meta = SegmentMeta {
            offsets,
            times,
            next_offset: summary.next_offset,
            first_raft_index: Some(first_raft_index),
            last_raft: summary.last_raft,
            max_timestamp: summary.max_timestamp,
            created_ms: summary.max_timestamp,
            bytes_since_index: u64::MAX,
        };
        Ok(Some(Self::new(base_offset, log_path, file, size, meta)))
    }

    /// Opens a segment by reading every batch, checking each CRC and that offsets and Raft
    /// indexes follow on from `after` (the previous segment's last batch). Returns the segment
    /// holding the valid prefix, and the damage that ended it, if any. The file is not changed.
    pub(crate) fn open_scanned(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
        after: Option<RaftLogId>,
        index_interval: u64,
        now_ms: i64,
    ) -> io::Result<(Self, Option<Damage>)> {
        let log_path = dir.join(Self::log_name(base_offset));
        let file = storage.open(&log_path, false)?;
        let len = file.len()?;
        let mut meta = SegmentMeta::empty(base_offset, now_ms);
        let mut window = Window::default();
        let mut pos = 0;
        let mut damage = None;
        let mut last_raft = after;
        while pos < len {
            match read_batch(file.as_ref(), &mut window, pos, len, true) {
                Ok(found) => {
                    let h = &found.header;
                    let problem = if h.base_offset != meta.next_offset {
                        Some("offset")
                    } else if last_raft.is_some_and(|r| h.raft.index != r.index + 1) {
                        Some("raft index")
                    } else if last_raft.is_some_and(|r| h.raft.term < r.term) {
                        Some("raft term")
                    } else {
                        None
                    };
                    if let Some(what) = problem {
                        damage = Some(Damage {
                            position: pos,
                            reason: DamageReason::OutOfSequence(what),
                        });
                        break;
                    }
                    if meta.first_raft_index.is_none() {
                        meta.created_ms = h.first_timestamp;
                    }
                    meta.note(pos, h, index_interval);
                    last_raft = Some(h.raft);
                    pos += u64::from(h.length);
                }
                Err(d) => {
                    damage = Some(d);
                    break;
                }
            }
        }
        Ok((Self::new(base_offset, log_path, file, pos, meta), damage))
    }

    pub(crate) fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub(crate) fn path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }

    pub(crate) fn meta(&self) -> RwLockReadGuard<'_, SegmentMeta> {
        self.meta
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn meta_mut(&self) -> RwLockWriteGuard<'_, SegmentMeta> {
        self.meta
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes a batch (its stamped header, then the rest of its bytes) at the end of the file
    /// and publishes it to readers, after reserving disk space for it ahead of time (up to
    /// `segment_bytes`). The caller holds the log's writer lock.
    pub(crate) fn append(
        &self,
        header: &BatchHeader,
        head: &[u8; HEADER_LEN],
        rest: &[u8],
        (index_interval, segment_bytes): (u64, u64),
    ) -> io::Result<()> {
        let pos = self.size();
        self.reserve(pos + u64::from(header.length), segment_bytes);
        if rest.len() <= SMALL_BATCH {
            let mut buf = Vec::with_capacity(HEADER_LEN + rest.len());
            buf.extend_from_slice(head);
            buf.extend_from_slice(rest);
            self.file.write_at(&buf, pos)?;
        } else {
            self.file.write_at(head, pos)?;
            self.file.write_at(rest, pos + HEADER_LEN as u64)?;
        }
        self.meta_mut().note(pos, header, index_interval);
        self.size
            .store(pos + u64::from(header.length), Ordering::Release);
        Ok(())
    }

    /// Reserves the file's disk blocks through `end` (and beyond: the next power of two from
    /// [`FIRST_RESERVATION`], up to `limit`) without changing its length, so that writes do
    /// not allocate blocks one page at a time. On ext4 a write that must allocate can wait for
    /// a block bitmap to be read from disk behind the writeback of an fsync in progress, which
    /// measured as 100–150 ms stalls of every append once per interval sync; a segment written
    /// into reserved blocks does not. Best effort: a file system that cannot reserve (or is
    /// full) is asked no more for this segment, and the write itself reports what fails.
    fn reserve(&self, end: u64, limit: u64) {
        if end <= self.reserved.load(Ordering::Relaxed) {
            return;
        }
        let want = end
            .max(FIRST_RESERVATION)
            .checked_next_power_of_two()
            .unwrap_or(end)
            .min(limit)
            .max(end);
        let reserved = match self.file.preallocate(want) {
            Ok(()) => want,
            Err(error) => {
                tracing::debug!(path = %self.log_path.display(), %error, "cannot reserve disk space");
                u64::MAX
            }
        };
        self.reserved.store(reserved, Ordering::Relaxed);
    }

    /// Gives back the disk space reserved past the file's end, once it is sealed. An error
    /// leaves the reservation in place and changes nothing else.
    pub(crate) fn release_reservation(&self) -> io::Result<()> {
        let reserved = self.reserved.swap(0, Ordering::Relaxed);
        let size = self.size();
        if reserved > size && reserved != u64::MAX {
            // Cutting a file at its own length frees the blocks reserved past it.
            self.file.set_len(size)?;
        }
        Ok(())
    }

    /// Cuts the segment at `position` (a batch boundary), dropping index entries past it and
    /// recomputing what the segment knows from the batches that remain.
    pub(crate) fn truncate(&self, position: u64, index_interval: u64) -> Result<(), Damage> {
        let _exclusive = self
            .truncation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let io = |e| Damage {
            position,
            reason: DamageReason::Io(e),
        };
        self.file.set_len(position).map_err(io)?;
        self.size.store(position, Ordering::Release);
        // Cutting the file freed what was reserved past the cut.
        self.reserved.store(position, Ordering::Relaxed);
        let mut meta = self.meta().clone();
        let start = meta.offsets.position_for_position(position);
        meta.offsets.truncate_to_position(start);
        meta.times.truncate_to_position(start);
        meta.bytes_since_index = u64::MAX;
        meta.max_timestamp = meta.times.last_timestamp().unwrap_or(i64::MIN);
        meta.next_offset = self.base_offset;
        meta.last_raft = None;
        if start == 0 {
            meta.first_raft_index = None;
        }
        let mut window = Window::default();
        let mut pos = start;
        while pos < position {
            let found = read_batch(self.file.as_ref(), &mut window, pos, position, false)?;
            meta.note(pos, &found.header, index_interval);
            pos += u64::from(found.header.length);
        }
        *self.meta_mut() = meta;
        Ok(())
    }

    /// Reads whole data batches from the one holding `offset`, up to `max_bytes` (and with
    /// `at_least_one`, one batch even if it is larger), checking each CRC.
    pub(crate) fn read_from_offset(
        &self,
        offset: Offset,
        max_bytes: usize,
        at_least_one: bool,
        index_interval: u64,
    ) -> Result<Vec<Located>, Damage> {
        let _shared = self
            .truncation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let end = self.size();
        let mut pos = self.meta().offsets.position_for_offset(offset);
        // From the index entry, up to one interval of batches precedes the wanted one.
        let slack = usize::try_from(index_interval).unwrap_or(usize::MAX);
        let mut window = Window::with_chunk(max_bytes.saturating_add(slack + HEADER_LEN));
        let mut found: Vec<Located> = Vec::new();
        let mut total = 0;
        while pos < end {
            let header = read_header(self.file.as_ref(), &mut window, pos, end)?;
            let len = u64::from(header.length);
            if header.control || header.next_offset() <= offset {
                pos += len;
                continue;
            }
            let fits = total + header.length as usize <= max_bytes;
            if !(fits || at_least_one && found.is_empty()) {
                break;
            }
            let batch = read_batch(self.file.as_ref(), &mut window, pos, end, true)?;
            total += batch.bytes.len();
            found.push(batch);
            pos += len;
            if total >= max_bytes {
                break;
            }
        }
        Ok(found)
    }

    /// Reads the batches whose Raft indexes lie in `[start, end)`, checking each CRC.
    pub(crate) fn read_raft_range(&self, start: u64, end: u64) -> Result<Vec<Located>, Damage> {
        let _shared = self
            .truncation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let size = self.size();
        let mut pos = self.meta().offsets.position_for_raft_index(start);
        let mut window = Window::default();
        let mut found = Vec::new();
        while pos < size {
            let header = read_header(self.file.as_ref(), &mut window, pos, size)?;
            if header.raft.index >= end {
                break;
            }
            if header.raft.index >= start {
                found.push(read_batch(
                    self.file.as_ref(),
                    &mut window,
                    pos,
                    size,
                    true,
                )?);
            }
            pos += u64::from(header.length);
        }
        Ok(found)
    }

    /// Position of the batch with Raft index `raft_index`, if the segment holds it.
    pub(crate) fn locate_raft_index(&self, raft_index: u64) -> Result<Option<Located>, Damage> {
        Ok(self
            .read_raft_range(raft_index, raft_index.saturating_add(1))?
            .into_iter()
            .next())
    }

    /// The offset of the first record with a timestamp at or after `timestamp`, if any.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, Damage> {
        let _shared = self
            .truncation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let size = self.size();
        let mut pos = match self.meta().times.scan_start(timestamp) {
            Some(entry) => entry.position,
            None => 0,
        };
        let mut window = Window::default();
        while pos < size {
            let header = read_header(self.file.as_ref(), &mut window, pos, size)?;
            if !header.control && header.max_timestamp >= timestamp {
                let batch = read_batch(self.file.as_ref(), &mut window, pos, size, true)?;
                for record in RecordIter::new(&header, &batch.bytes[HEADER_LEN..]) {
                    let record = record.map_err(|e| Damage {
                        position: pos,
                        reason: DamageReason::Decode(e),
                    })?;
                    if header.first_timestamp.wrapping_add(record.timestamp_delta) >= timestamp {
                        return Ok(Some(header.base_offset + u64::from(record.offset_delta)));
                    }
                }
            }
            pos += u64::from(header.length);
        }
        Ok(None)
    }

    /// Writes the segment's `.index` and `.timeindex` files (when it is sealed). The log file
    /// must already be synced if the indexes are to be trusted after a crash.
    pub(crate) fn write_indexes(
        &self,
        storage: &dyn Storage,
        dir: &Path,
        sync: bool,
    ) -> io::Result<()> {
        let meta = self.meta().clone();
        let summary = SegmentSummary {
            log_size: self.size(),
            next_offset: meta.next_offset,
            last_raft: meta.last_raft,
            max_timestamp: meta.max_timestamp,
        };
        for (path, bytes) in [
            (
                Self::index_path(dir, self.base_offset),
                meta.offsets.encode(self.base_offset, &summary),
            ),
            (
                Self::time_index_path(dir, self.base_offset),
                meta.times.encode(self.base_offset),
            ),
        ] {
            let file = storage.open(&path, true)?;
            file.set_len(0)?;
            file.write_at(&bytes, 0)?;
            if sync {
                file.sync_data()?;
            }
        }
        Ok(())
    }

    /// Removes the segment's files (index files may be absent).
    pub(crate) fn remove_files(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: Offset,
    ) -> io::Result<()> {
        for path in [
            dir.join(Self::log_name(base_offset)),
            Self::index_path(dir, base_offset),
            Self::time_index_path(dir, base_offset),
        ] {
            match storage.remove(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Removes a segment's index files, which describe it only while it is sealed.
pub(crate) fn remove_indexes(
    storage: &dyn Storage,
    dir: &Path,
    base_offset: Offset,
) -> io::Result<()> {
    for path in [
        Segment::index_path(dir, base_offset),
        Segment::time_index_path(dir, base_offset),
    ] {
        match storage.remove(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn read_whole(storage: &dyn Storage, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match storage.open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = usize::try_from(file.len()?).map_err(io::Error::other)?;
    let mut buf = vec![0; len];
    read_exact_at(file.as_ref(), &mut buf, 0)?;
    Ok(Some(buf))
}

/// A cached stretch of a segment file, so that scanning many small batches costs one read per
/// chunk rather than two per batch.
#[derive(Debug, Default)]
struct Window {
    start: u64,
    data: Bytes,
    chunk: usize,
}

impl Window {
    fn with_chunk(hint: usize) -> Self {
        Self {
            chunk: hint.clamp(MIN_READ_CHUNK, MAX_CHUNK),
            ..Self::default()
        }
    }

    /// `len` bytes at `pos`, all below `end`.
    fn get(
        &mut self,
        file: &dyn StorageFile,
        pos: u64,
        len: usize,
        end: u64,
    ) -> Result<Bytes, Damage> {
        let have = pos >= self.start && pos + len as u64 <= self.start + self.data.len() as u64;
        if !have {
            let chunk = if self.chunk == 0 {
                SCAN_CHUNK
            } else {
                self.chunk
            };
            let want = len.max(chunk);
            let avail = usize::try_from(end - pos).unwrap_or(usize::MAX);
            let n = want.min(avail).max(len);
            let buf = file.read_vec_at(n, pos).map_err(|e| Damage {
                position: pos,
                reason: DamageReason::Io(e),
            })?;
            self.start = pos;
            self.data = Bytes::from(buf);
        }
        let from = usize::try_from(pos - self.start).unwrap_or(usize::MAX);
        if from + len > self.data.len() {
            return Err(Damage {
                position: pos,
                reason: DamageReason::Decode(DecodeError::Truncated {
                    needed: len,
                    available: self.data.len().saturating_sub(from),
                }),
            });
        }
        Ok(self.data.slice(from..from + len))
    }
}

fn read_header(
    file: &dyn StorageFile,
    window: &mut Window,
    pos: u64,
    end: u64,
) -> Result<BatchHeader, Damage> {
    let decode = |e| Damage {
        position: pos,
        reason: DamageReason::Decode(e),
    };
    if end - pos < HEADER_LEN as u64 {
        return Err(decode(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: usize::try_from(end - pos).unwrap_or(usize::MAX),
        }));
    }
    let head = window.get(file, pos, HEADER_LEN, end)?;
    let header = BatchHeader::parse(&head).map_err(decode)?;
    if pos + u64::from(header.length) > end {
        return Err(decode(DecodeError::Truncated {
            needed: header.length as usize,
            available: usize::try_from(end - pos).unwrap_or(usize::MAX),
        }));
    }
    Ok(header)
}

fn read_batch(
    file: &dyn StorageFile,
    window: &mut Window,
    pos: u64,
    end: u64,
    check_crc: bool,
) -> Result<Located, Damage> {
    let header = read_header(file, window, pos, end)?;
    let bytes = window.get(file, pos, header.length as usize, end)?;
    if check_crc {
        header.verify_crc(&bytes).map_err(|e| Damage {
            position: pos,
            reason: DamageReason::Decode(e),
        })?;
    }
    Ok(Located {
        position: pos,
        header,
        bytes,
    })
}

/// The least disk space an active segment reserves ahead of its writes; a busy one reserves
/// in doubling steps from here.
const FIRST_RESERVATION: u64 = 1 << 20;
/// Batches up to this size are written with their header in one call.
const SMALL_BATCH: usize = 64 * 1024;
/// Reads of a few batches fetch at least this much.
const MIN_READ_CHUNK: usize = 4 * 1024;
/// Scans (recovery, Raft reads, timestamp lookups) read this much at a time.
const SCAN_CHUNK: usize = 64 * 1024;
const MAX_CHUNK: usize = 8 * 1024 * 1024;
