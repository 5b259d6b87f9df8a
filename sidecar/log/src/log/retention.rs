//! Retention: delete whole sealed segments by age and by total size; never the active one.

use super::error::WriteError;
use super::{Log, Shared, lock, read};
use crate::Offset;
use crate::batch::RaftLogId;
use crate::meta_file::LogStart;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes deleted.
    pub bytes: u64,
}

impl Log {
    /// Deletes sealed segments from the front of the log while the oldest one is past
    /// `retention_ms` (its newest record is older than now minus the limit) or while the log
    /// without it would still hold at least `retention_bytes`. The active segment always stays.
    /// The log start then moves to the first remaining offset.
    ///
    /// Only segments that end at or below `committed` (the high watermark) are deleted, so the
    /// log start never passes what consumers may read up to.
    pub fn apply_retention(&self, committed: Offset) -> Result<RetentionReport, WriteError> {
        let shared = &*self.shared;
        let _writer = lock(&shared.writer);
        if shared.durability.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        let state = *read(&shared.state);
        let (report, last_removed) = shared.retention_candidates(committed);
        let Some((start_offset, last_raft)) = last_removed else {
            return Ok(report);
        };
        let last_purged = match (state.last_purged, last_raft) {
            (Some(p), Some(l)) => Some(if l.index > p.index { l } else { p }),
            (p, l) => p.or(l),
        };
        shared.replace_start(
            LogStart {
                start_offset: start_offset.max(state.start_offset),
                last_purged,
            },
            false,
        )?;
        tracing::info!(
            dir = %shared.dir.display(),
            segments = report.segments,
            bytes = report.bytes,
            "retention deleted segments"
        );
        Ok(report)
    }

    /// The last Raft entry of the segments [`Log::apply_retention`] would delete now, without
    /// deleting them: a replicated partition's log is its Raft log, and is purged through it
    /// by openraft (`Log::purge_through`), which deletes the same segments.
    pub fn retention_point(&self, committed: Offset) -> Option<RaftLogId> {
        let shared = &*self.shared;
        let _writer = lock(&shared.writer);
        let (_, last_removed) = shared.retention_candidates(committed);
        last_removed.and_then(|(_, last_raft)| last_raft)
    }
}

impl Shared {
    /// The sealed segments at the front of the log that retention lets go (see
    /// [`Log::apply_retention`]): what deleting them would report, and the last one's next
    /// offset and last Raft entry. The caller holds the writer lock.
    fn retention_candidates(
        &self,
        committed: Offset,
    ) -> (RetentionReport, Option<(Offset, Option<RaftLogId>)>) {
        let now = self.config.clock.now_ms();
        let segments = self.segments();
        let state = *read(&self.state);
        let mut total = state.size_bytes;
        let mut report = RetentionReport::default();
        let mut last_removed = None;
        for segment in &segments[..segments.len() - 1] {
            let size = segment.size();
            let meta = segment.meta();
            let too_old = self
                .config
                .retention_ms
                .is_some_and(|ms| meta.max_timestamp < now.saturating_sub(ms));
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|limit| total.saturating_sub(size) >= limit);
            if !(too_old || too_big) || meta.next_offset > committed {
                break;
            }
            total -= size;
            report.segments += 1;
            report.bytes += size;
            let last_raft = meta
                .last_raft
                .or(last_removed.and_then(|(_, last_raft)| last_raft));
            last_removed = Some((meta.next_offset, last_raft));
        }
        (report, last_removed)
    }
}
