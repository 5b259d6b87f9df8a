//! The sparse offset index of a segment: offset → position and Raft index → position.
//!
//! In memory while the segment is active; written to `<base offset>.index` when the segment is
//! sealed, together with a summary of the segment (its log size, next offset, last Raft id and
//! largest timestamp) that lets a sealed segment open without reading its log. A missing,
//! corrupt or stale file (its recorded log size differs from the log's) is rebuilt from the log.

use crate::Offset;
use crate::batch::RaftLogId;

/// One index entry: a batch's base offset, Raft index and byte position in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) offset: Offset,
    pub(crate) raft_index: u64,
    pub(crate) position: u64,
}

/// What a sealed segment's `.index` file says about the segment as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) log_size: u64,
    pub(crate) next_offset: Offset,
    pub(crate) last_raft: Option<RaftLogId>,
    pub(crate) max_timestamp: i64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, entry: OffsetEntry) {
        self.entries.push(entry);
    }

    pub(crate) fn first(&self) -> Option<&OffsetEntry> {
        self.entries.first()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Position of the last indexed batch whose base offset is at most `offset` (0 if none).
    pub(crate) fn position_for_offset(&self, offset: Offset) -> u64 {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        i.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// Position of the last indexed batch whose Raft index is at most `raft_index` (0 if none).
    pub(crate) fn position_for_raft_index(&self, raft_index: u64) -> u64 {
        let i = self.entries.partition_point(|e| e.raft_index <= raft_index);
        i.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// Position of the last indexed batch that starts before `position` (0 if none).
    pub(crate) fn position_for_position(&self, position: u64) -> u64 {
        let i = self.entries.partition_point(|e| e.position < position);
        i.checked_sub(1).map_or(0, |i| self.entries[i].position)
    }

    /// Drops the entries of batches at or past `position`.
    pub(crate) fn truncate_to_position(&mut self, position: u64) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    /// The `.index` file image.
    pub(crate) fn encode(&self, base_offset: Offset, summary: &SegmentSummary) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + self.entries.len() * ENTRY_LEN);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&base_offset.to_le_bytes());
        out.extend_from_slice(&summary.log_size.to_le_bytes());
        out.extend_from_slice(&summary.next_offset.to_le_bytes());
        let (has_raft, raft) = summary
            .last_raft
            .map_or((0u64, RaftLogId::default()), |r| (1, r));
        out.extend_from_slice(&has_raft.to_le_bytes());
        out.extend_from_slice(&raft.term.to_le_bytes());
        out.extend_from_slice(&raft.index.to_le_bytes());
        out.extend_from_slice(&summary.max_timestamp.to_le_bytes());
        for e in &self.entries {
            let relative = u32::try_from(e.offset - base_offset).unwrap_or(u32::MAX);
            out.extend_from_slice(&relative.to_le_bytes());
            out.extend_from_slice(&u32::try_from(e.position).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(&e.raft_index.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a `.index` file image; `None` if it is not a well-formed index of this segment.
    pub(crate) fn decode(bytes: &[u8], base_offset: Offset) -> Option<(Self, SegmentSummary)> {
        let header = bytes.get(..INDEX_HEADER_LEN)?;
        if &header[..4] != INDEX_MAGIC
            || !(bytes.len() - INDEX_HEADER_LEN).is_multiple_of(ENTRY_LEN)
        {
            return None;
        }
        if u32_at(header, 4) != crc32c::crc32c(&bytes[8..]) || u64_at(header, 8) != base_offset {
            return None;
        }
        let summary = SegmentSummary {
            log_size: u64_at(header, 16),
            next_offset: u64_at(header, 24),
            last_raft: (u64_at(header, 32) == 1).then(|| RaftLogId {
                term: u64_at(header, 40),
                index: u64_at(header, 48),
            }),
            max_timestamp: u64_at(header, 56).cast_signed(),
        };
        let entries: Vec<OffsetEntry> = bytes[INDEX_HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|c| OffsetEntry {
                offset: base_offset + u64::from(u32_at(c, 0)),
                position: u64::from(u32_at(c, 4)),
                raft_index: u64_at(c, 8),
            })
            .collect();
        let sorted = entries.windows(2).all(|w| {
            w[0].offset <= w[1].offset
                && w[0].raft_index < w[1].raft_index
                && w[0].position < w[1].position
        });
        let in_bounds = entries.iter().all(|e| e.position < summary.log_size)
            && entries.first().is_none_or(|e| e.position == 0);
        (sorted && in_bounds).then_some((Self { entries }, summary))
    }
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

const INDEX_MAGIC: &[u8; 4] = b"SSIX";
const INDEX_HEADER_LEN: usize = 64;
const ENTRY_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let mut index = OffsetIndex::default();
        index.push(OffsetEntry {
            offset: 100,
            raft_index: 7,
            position: 0,
        });
        index.push(OffsetEntry {
            offset: 150,
            raft_index: 9,
            position: 4096,
        });
        let summary = SegmentSummary {
            log_size: 9000,
            next_offset: 200,
            last_raft: Some(RaftLogId { term: 2, index: 12 }),
            max_timestamp: 77,
        };
        let bytes = index.encode(100, &summary);
        let (decoded, got) = OffsetIndex::decode(&bytes, 100).unwrap();
        assert_eq!(decoded.entries, index.entries);
        assert_eq!(got, summary);
        assert!(OffsetIndex::decode(&bytes, 101).is_none());
        let mut bad = bytes.clone();
        bad[70] ^= 1;
        assert!(OffsetIndex::decode(&bad, 100).is_none());
        assert!(OffsetIndex::decode(&bytes[..bytes.len() - 3], 100).is_none());
    }

    #[test]
    fn finds_floor_positions() {
        let mut index = OffsetIndex::default();
        index.push(OffsetEntry {
            offset: 0,
            raft_index: 1,
            position: 0,
        });
        index.push(OffsetEntry {
            offset: 10,
            raft_index: 3,
            position: 500,
        });
        index.push(OffsetEntry {
            offset: 10,
            raft_index: 4,
            position: 600,
        });
        assert_eq!(index.position_for_offset(5), 0);
        assert_eq!(index.position_for_offset(10), 600);
        assert_eq!(index.position_for_offset(99), 600);
        assert_eq!(index.position_for_raft_index(3), 500);
        index.truncate_to_position(600);
        assert_eq!(index.len(), 2);
    }
}
