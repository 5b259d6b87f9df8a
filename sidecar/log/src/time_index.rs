//! The sparse time index of a segment: running largest timestamp → batch.
//!
//! An entry `(timestamp, offset, position)` says that every batch up to and including the one
//! at `position` has records no later than `timestamp`. To find the first record at or after a
//! time, start after the last entry whose timestamp is below it. Kept in memory while the
//! segment is active and written to `<base offset>.timeindex` when it is sealed.

use crate::Offset;
use crate::offset_index::{u32_at, u64_at};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) offset: Offset,
    pub(crate) position: u64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Records a batch if its running largest timestamp grew past the last entry's.
    pub(crate) fn push(&mut self, entry: TimeEntry) {
        if self
            .entries
            .last()
            .is_none_or(|last| entry.timestamp > last.timestamp)
        {
            self.entries.push(entry);
        }
    }

    /// Position from which to scan for the first batch with a record at or after `timestamp`.
    pub(crate) fn scan_start(&self, timestamp: i64) -> Option<&TimeEntry> {
        let i = self.entries.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|i| &self.entries[i])
    }

    pub(crate) fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }

    pub(crate) fn truncate_to_position(&mut self, position: u64) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    /// The `.timeindex` file image.
    pub(crate) fn encode(&self, base_offset: Offset) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.entries.len() * ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&base_offset.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_le_bytes());
            let relative = u32::try_from(e.offset - base_offset).unwrap_or(u32::MAX);
            out.extend_from_slice(&relative.to_le_bytes());
            out.extend_from_slice(&u32::try_from(e.position).unwrap_or(u32::MAX).to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a `.timeindex` image; `None` if it is not a well-formed index of this segment
    /// whose positions lie below `log_size`.
    pub(crate) fn decode(bytes: &[u8], base_offset: Offset, log_size: u64) -> Option<Self> {
        let header = bytes.get(..HEADER_LEN)?;
        if &header[..4] != MAGIC || !(bytes.len() - HEADER_LEN).is_multiple_of(ENTRY_LEN) {
            return None;
        }
        if u32_at(header, 4) != crc32c::crc32c(&bytes[8..]) || u64_at(header, 8) != base_offset {
            return None;
        }
        let entries: Vec<TimeEntry> = bytes[HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|c| TimeEntry {
                timestamp: u64_at(c, 0).cast_signed(),
                offset: base_offset + u64::from(u32_at(c, 8)),
                position: u64::from(u32_at(c, 12)),
            })
            .collect();
        let ok = entries
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp && w[0].position < w[1].position)
            && entries.iter().all(|e| e.position < log_size);
        ok.then_some(Self { entries })
    }
}

const MAGIC: &[u8; 4] = b"SSTX";
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_growing_timestamps_and_round_trips() {
        let mut index = TimeIndex::default();
        index.push(TimeEntry {
            timestamp: 10,
            offset: 5,
            position: 0,
        });
        index.push(TimeEntry {
            timestamp: 10,
            offset: 6,
            position: 100,
        });
        index.push(TimeEntry {
            timestamp: 30,
            offset: 9,
            position: 300,
        });
        assert_eq!(index.entries.len(), 2);
        assert_eq!(index.scan_start(10), None);
        assert_eq!(index.scan_start(11).map(|e| e.position), Some(0));
        assert_eq!(index.scan_start(31).map(|e| e.position), Some(300));
        let bytes = index.encode(5);
        let decoded = TimeIndex::decode(&bytes, 5, 1000).unwrap();
        assert_eq!(decoded.entries, index.entries);
        assert!(TimeIndex::decode(&bytes, 5, 200).is_none());
    }
}
