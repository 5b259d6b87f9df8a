//! The fixed, little-endian record batch header.

use crate::Offset;
use crate::batch::DecodeError;

/// The format version this crate writes and reads (the `magic` byte).
pub const MAGIC: u8 = 1;

/// Size in bytes of the fixed header that starts every record batch.
pub const HEADER_LEN: usize = 73;

/// Bytes at the start of a batch that are written by the sidecar and not covered by the CRC:
/// base offset, length, Raft term, Raft index, magic and the CRC itself.
pub const CRC_START: usize = 33;

/// The position of a batch in the Raft log: the term of the leader that created the entry and
/// its index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RaftLogId {
    /// The leader term in which the entry was created.
    pub term: u64,
    /// The entry's position in the Raft log.
    pub index: u64,
}

impl std::fmt::Display for RaftLogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// The compression codec of a batch's records (attribute bits 0–2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Records are stored as they are.
    #[default]
    None,
}

/// The producer identity and sequence used for idempotent publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// Producer id, or -1 when the producer is not idempotent.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record, or -1.
    pub base_sequence: i32,
}

impl ProducerState {
    /// A producer that does not use idempotence.
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

impl Default for ProducerState {
    fn default() -> Self {
        Self::NONE
    }
}

/// The parsed fixed header of a record batch.
///
/// Parsing checks only what the header alone can tell (length bounds, magic, attributes); the
/// CRC is checked by [`BatchHeader::verify_crc`] on the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the batch's first record; for a control batch, the offset the next data batch
    /// will take.
    pub base_offset: Offset,
    /// Total size of the batch in bytes, header included.
    pub length: u32,
    /// The Raft entry this batch is.
    pub raft: RaftLogId,
    /// CRC32C of the bytes from [`CRC_START`] to the end of the batch.
    pub crc: u32,
    /// Compression of the records.
    pub compression: Compression,
    /// Whether this is a control batch (a Raft blank or membership entry) with no records.
    pub control: bool,
    /// Whether the body starts with headers that every record has unless it has its own of
    /// the same name (attribute bit 5; data batches only).
    pub shared_headers: bool,
    /// Offset of the last record relative to `base_offset`; 0 for a control batch.
    pub last_offset_delta: u32,
    /// Timestamp (ms since the Unix epoch) of the first record.
    pub first_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotence fields.
    pub producer: ProducerState,
    /// Number of records in the batch; 0 for a control batch.
    pub record_count: u32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`.
    ///
    /// `buf` may hold only the header (for scanning) or the whole batch.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let head: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            })?;
        let magic = head[28];
        if magic != MAGIC {
            return Err(DecodeError::UnknownMagic(magic));
        }
        let length = u32_at(head, 8);
        if (length as usize) < HEADER_LEN {
            return Err(DecodeError::BadLength(length));
        }
        let attributes = u16_at(head, 33);
        let compression = match attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            codec => return Err(DecodeError::UnsupportedCompression(codec)),
        };
        if attributes & !(ATTR_COMPRESSION_MASK | ATTR_CONTROL | ATTR_SHARED_HEADERS) != 0 {
            return Err(DecodeError::UnknownAttributes(attributes));
        }
        let header = Self {
            base_offset: u64_at(head, 0),
            length,
            raft: RaftLogId {
                term: u64_at(head, 12),
                index: u64_at(head, 20),
            },
            crc: u32_at(head, 29),
            compression,
            control: attributes & ATTR_CONTROL != 0,
            shared_headers: attributes & ATTR_SHARED_HEADERS != 0,
            last_offset_delta: u32_at(head, 35),
            first_timestamp: u64_at(head, 39).cast_signed(),
            max_timestamp: u64_at(head, 47).cast_signed(),
            producer: ProducerState {
                producer_id: u64_at(head, 55).cast_signed(),
                producer_epoch: u16_at(head, 63).cast_signed(),
                base_sequence: u32_at(head, 65).cast_signed(),
            },
            record_count: u32_at(head, 69),
        };
        if header.control && (header.record_count != 0 || header.last_offset_delta != 0) {
            return Err(DecodeError::ControlWithRecords);
        }
        if header.control && header.shared_headers {
            return Err(DecodeError::BadControl(
                "a control batch has no shared headers",
            ));
        }
        if !header.control
            && (header.record_count == 0
                || u64::from(header.record_count) > u64::from(header.last_offset_delta) + 1)
        {
            return Err(DecodeError::BadRecordCount {
                count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if header.max_timestamp < header.first_timestamp {
            return Err(DecodeError::BadTimestamps {
                first: header.first_timestamp,
                max: header.max_timestamp,
            });
        }
        Ok(header)
    }

    /// How many offsets the batch takes: its records' span, or 0 for a control batch.
    pub fn offset_count(&self) -> u64 {
        if self.control {
            0
        } else {
            u64::from(self.last_offset_delta) + 1
        }
    }

    /// The offset after the batch's last record.
    pub fn next_offset(&self) -> Offset {
        self.base_offset + self.offset_count()
    }

    /// Checks the CRC over `batch`, which must be exactly this batch's bytes.
    pub fn verify_crc(&self, batch: &[u8]) -> Result<(), DecodeError> {
        if batch.len() != self.length as usize {
            return Err(DecodeError::Truncated {
                needed: self.length as usize,
                available: batch.len(),
            });
        }
        let actual = crc32c::crc32c(&batch[CRC_START..]);
        if actual == self.crc {
            Ok(())
        } else {
            Err(DecodeError::BadCrc {
                stored: self.crc,
                actual,
            })
        }
    }

    /// Writes the sidecar-owned fields (base offset and Raft position) into an encoded batch.
    ///
    /// They lie before [`CRC_START`], so the producer's CRC stays valid.
    ///
    /// # Panics
    ///
    /// Panics if `batch` is shorter than [`HEADER_LEN`]; callers pass batches that parsed.
    pub fn stamp(batch: &mut [u8], base_offset: Offset, raft: RaftLogId) {
        batch[0..8].copy_from_slice(&base_offset.to_le_bytes());
        batch[12..20].copy_from_slice(&raft.term.to_le_bytes());
        batch[20..28].copy_from_slice(&raft.index.to_le_bytes());
    }

    pub(crate) fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.length.to_le_bytes());
        out[12..20].copy_from_slice(&self.raft.term.to_le_bytes());
        out[20..28].copy_from_slice(&self.raft.index.to_le_bytes());
        out[28] = MAGIC;
        out[29..33].copy_from_slice(&self.crc.to_le_bytes());
        let attributes = match self.compression {
            Compression::None => 0,
        } | if self.control { ATTR_CONTROL } else { 0 }
            | if self.shared_headers {
                ATTR_SHARED_HEADERS
            } else {
                0
            };
        out[33..35].copy_from_slice(&attributes.to_le_bytes());
        out[35..39].copy_from_slice(&self.last_offset_delta.to_le_bytes());
        out[39..47].copy_from_slice(&self.first_timestamp.to_le_bytes());
        out[47..55].copy_from_slice(&self.max_timestamp.to_le_bytes());
        out[55..63].copy_from_slice(&self.producer.producer_id.to_le_bytes());
        out[63..65].copy_from_slice(&self.producer.producer_epoch.to_le_bytes());
        out[65..69].copy_from_slice(&self.producer.base_sequence.to_le_bytes());
        out[69..73].copy_from_slice(&self.record_count.to_le_bytes());
    }
}

fn u16_at(head: &[u8; HEADER_LEN], at: usize) -> u16 {
    u16::from_le_bytes([head[at], head[at + 1]])
}

fn u32_at(head: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&head[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(head: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&head[at..at + 8]);
    u64::from_le_bytes(bytes)
}

const ATTR_COMPRESSION_MASK: u16 = 0b111;
const ATTR_CONTROL: u16 = 1 << 4;
const ATTR_SHARED_HEADERS: u16 = 1 << 5;
