//! Retention: delete whole sealed segments by age and by total size; never the active one.

use super::error::WriteError;
use super::{Log, lock, read};
use crate::Offset;
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
        let now = shared.config.clock.now_ms();
        let segments = shared.segments();
        let state = *read(&shared.state);
        let mut total = state.size_bytes;
        let mut report = RetentionReport::default();
        let mut last_removed = None;
        for segment in &segments[..segments.len() - 1] {
            let size = segment.size();
            let meta = segment.meta();
            let too_old = shared
                .config
                .retention_ms
                .is_some_and(|ms| meta.max_timestamp < now.saturating_sub(ms));
            let too_big = shared
                .config
                .retention_bytes
                .is_some_and(|limit| total.saturating_sub(size) >= limit);
            if !(too_old || too_big) || meta.next_offset > committed {
                break;
            }
            total -= size;
            report.segments += 1;
            report.bytes += size;
            last_removed = Some((meta.next_offset, meta.last_raft));
        }
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
}
