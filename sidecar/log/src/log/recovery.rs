//! Opening a log: find the segments, trust sealed ones with intact indexes, scan the rest,
//! and cut the active segment at its first torn or corrupt batch.
//!
//! ```text
//!  segments:  [sealed, indexed] [sealed, indexed] [index missing/stale] [active]
//!             \______ opened from .index _______/ \____ scanned: every CRC checked ____/
//! ```
//!
//! The rules:
//! - The active (last) segment is always scanned. At the first batch that is torn, fails its
//!   CRC, or does not follow on (offset, Raft index, term), the file is cut there: those bytes
//!   were never reported durable, because a sync covers only whole appended batches.
//! - A sealed segment whose scan finds damage is an error naming the segment and byte position
//!   (its bytes were synced before it was sealed, so damage there is not a torn write) — except
//!   under `FsyncPolicy::Never`, where a crash may tear a segment that was sealed unsynced; then
//!   it is cut like the active one and the segments after it are removed.
//! - Consecutive segments must fit: a segment's base offset is the previous one's next offset,
//!   its first Raft index the previous one's last plus one.
//! - Segments wholly at or below the last purged Raft entry are removed (a purge that crashed
//!   after writing `log-start` but before deleting them).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::durability::Durability;
use super::error::OpenError;
use super::{LogState, Shared, Writer};
use crate::config::{FsyncPolicy, LogConfig};
use crate::meta_file::{self, LogStart, MetaError, RaftVote};
use crate::segment::{self, Segment};
use crate::storage::Storage;

pub(super) fn open(
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
) -> Result<Shared, OpenError> {
    validate(&config)?;
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    storage.create_dir_all(&dir).map_err(io_at(&dir))?;
    let names = storage.list(&dir).map_err(io_at(&dir))?;
    let mut bases = Vec::new();
    for name in &names {
        if Path::new(name).extension().is_some_and(|e| e == "tmp") {
            storage
                .remove(&dir.join(name))
                .map_err(io_at(&dir.join(name)))?;
        } else if let Some(base) = name.strip_suffix(".log").and_then(parse_base) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    for name in &names {
        let stem = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"))
            .and_then(parse_base);
        if stem.is_some_and(|base| bases.binary_search(&base).is_err()) {
            storage
                .remove(&dir.join(name))
                .map_err(io_at(&dir.join(name)))?;
        }
    }

    let log_start = read_meta(
        storage.as_ref(),
        &dir,
        meta_file::LOG_START_FILE,
        LogStart::decode,
    )?;
    let vote = read_meta(
        storage.as_ref(),
        &dir,
        meta_file::VOTE_FILE,
        RaftVote::decode,
    )?;
    let committed = read_meta(
        storage.as_ref(),
        &dir,
        meta_file::COMMITTED_FILE,
        meta_file::decode_raft_id,
    )?
    .flatten();
    let log_start = log_start.unwrap_or_default();

    let segments = open_segments(storage.as_ref(), &dir, &config, &bases)?;
    let segments = drop_purged(storage.as_ref(), &dir, &config, segments, log_start)?;

    let last = segments
        .iter()
        .rev()
        .find_map(|s| s.meta().last_raft)
        .filter(|last| log_start.last_purged.is_none_or(|p| last.index > p.index));
    let first_base = segments
        .first()
        .map_or(log_start.start_offset, |s| s.base_offset());
    let active = segments.last().map_or(first_base, |s| s.meta().next_offset);
    let state = LogState {
        start_offset: log_start.start_offset.max(first_base),
        next_offset: active,
        last_purged: log_start.last_purged,
        last,
        size_bytes: segments.iter().map(|s| s.size()).sum(),
        segment_count: segments.len(),
    };
    tracing::debug!(
        dir = %dir.display(),
        segments = state.segment_count,
        start_offset = state.start_offset,
        next_offset = state.next_offset,
        "opened log"
    );
    Ok(Shared {
        dir,
        storage,
        config,
        writer: Mutex::new(Writer { seq: 0 }),
        segments: RwLock::new(Arc::new(segments)),
        state: RwLock::new(state),
        durability: Durability::default(),
        unsynced: Mutex::new(Vec::new()),
        vote: RwLock::new(vote),
        committed: RwLock::new(committed),
    })
}

fn validate(config: &LogConfig) -> Result<(), OpenError> {
    if config.segment_bytes == 0 || config.segment_bytes > MAX_SEGMENT_BYTES {
        return Err(OpenError::InvalidConfig(
            "segment_bytes must be between 1 and 4 GiB minus the largest batch",
        ));
    }
    if config.max_batch_bytes > MAX_BATCH_BYTES {
        return Err(OpenError::InvalidConfig(
            "max_batch_bytes must be at most 256 MiB",
        ));
    }
    if config.index_interval_bytes == 0 {
        return Err(OpenError::InvalidConfig(
            "index_interval_bytes must be positive",
        ));
    }
    Ok(())
}

fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
    bases: &[u64],
) -> Result<Vec<Arc<Segment>>, OpenError> {
    let now = config.clock.now_ms();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let mut scanning = false;
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let path = dir.join(Segment::log_name(base));
        let io = |source| OpenError::Io {
            path: path.clone(),
            source,
        };
        let prev_last = segments.iter().rev().find_map(|s| s.meta().last_raft);
        if let Some(prev) = segments.last() {
            let expected = prev.meta().next_offset;
            if base != expected {
                return Err(OpenError::Gap {
                    segment: path,
                    what: "base offset",
                    expected,
                    found: base,
                });
            }
        }
        let indexed = if scanning || is_last {
            None
        } else {
            Segment::open_indexed(storage, dir, base).map_err(io)?
        };
        let segment = if let Some(segment) = indexed {
            segment
        } else {
            scanning = true;
            let (segment, damage) = Segment::open_scanned(
                storage,
                dir,
                base,
                prev_last,
                config.index_interval_bytes,
                now,
            )
            .map_err(io)?;
            // Under `never`, a sealed segment may also have lost its tail whole: it then ends
            // before the next segment begins, and the log is cut there too.
            let short = bases
                .get(i + 1)
                .is_some_and(|&next| segment.meta().next_offset != next);
            let never = config.fsync == FsyncPolicy::Never;
            if damage.is_some() || (short && never) {
                if let Some(damage) = damage {
                    if !is_last && !never {
                        return Err(damage.into_open_error(path));
                    }
                    tracing::warn!(
                        segment = %path.display(),
                        position = damage.position,
                        reason = %damage.reason,
                        "cutting the log at a torn or corrupt batch"
                    );
                } else {
                    tracing::warn!(
                        segment = %path.display(),
                        "cutting the log where an unsynced segment ends short"
                    );
                }
                segment.file().set_len(segment.size()).map_err(io)?;
                segment.file().sync_data().map_err(io)?;
                segment::remove_indexes(storage, dir, base).map_err(io)?;
                for &later in &bases[i + 1..] {
                    tracing::warn!(base_offset = later, "removing a segment after the cut");
                    Segment::remove_files(storage, dir, later).map_err(io)?;
                }
                storage.sync_dir(dir).map_err(io)?;
                segments.push(Arc::new(segment));
                break;
            }
            if is_last {
                segment::remove_indexes(storage, dir, base).map_err(io)?;
            }
            segment
        };
        if let (Some(prev), Some(first)) = (prev_last, segment.meta().first_raft_index)
            && first != prev.index + 1
        {
            return Err(OpenError::Gap {
                segment: path,
                what: "raft index",
                expected: prev.index + 1,
                found: first,
            });
        }
        segments.push(Arc::new(segment));
    }
    Ok(segments)
}

/// Removes segments wholly covered by the last purge, and makes sure an active segment exists.
fn drop_purged(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
    mut segments: Vec<Arc<Segment>>,
    log_start: LogStart,
) -> Result<Vec<Arc<Segment>>, OpenError> {
    let io_at = |path: PathBuf| move |source| OpenError::Io { path, source };
    let purged = |s: &Arc<Segment>| {
        let last = s.meta().last_raft;
        last.zip(log_start.last_purged)
            .is_some_and(|(last, purged)| last.index <= purged.index)
    };
    let keep_from = segments.iter().take_while(|s| purged(s)).count();
    if keep_from > 0 || segments.is_empty() {
        for s in segments.drain(..keep_from) {
            Segment::remove_files(storage, dir, s.base_offset())
                .map_err(io_at(s.path().to_path_buf()))?;
        }
        if segments.is_empty() {
            let segment =
                Segment::create(storage, dir, log_start.start_offset, config.clock.now_ms())
                    .map_err(io_at(dir.to_path_buf()))?;
            segments.push(Arc::new(segment));
        }
        storage.sync_dir(dir).map_err(io_at(dir.to_path_buf()))?;
    }
    Ok(segments)
}

fn parse_base(stem: &str) -> Option<u64> {
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

fn read_meta<T>(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    decode: impl Fn(&[u8]) -> Option<T>,
) -> Result<Option<T>, OpenError> {
    let path = dir.join(name);
    match meta_file::read(storage, dir, name) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => decode(&bytes).map(Some).ok_or(OpenError::BadMetaFile {
            path,
            reason: "unexpected contents",
        }),
        Err(MetaError::Io(source)) => Err(OpenError::Io { path, source }),
        Err(MetaError::Corrupt(reason)) => Err(OpenError::BadMetaFile { path, reason }),
    }
}

/// Index entries hold positions as `u32`; a segment never grows past its limit plus one batch.
const MAX_SEGMENT_BYTES: u64 = (1 << 32) - MAX_BATCH_BYTES as u64 - 1;
const MAX_BATCH_BYTES: usize = 256 << 20;
