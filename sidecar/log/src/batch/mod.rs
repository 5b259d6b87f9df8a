//! The record batch: the unit of storage, replication and transfer.
//!
//! A batch is a fixed 73-byte little-endian header followed by its body: the records of a data
//! batch, or the payload of a control batch (a Raft blank or membership entry, which takes a
//! Raft index but no offset). The same bytes travel on the wire, lie in the log and are sent to
//! replicas. `docs/STORAGE.md` gives the layout byte by byte.
//!
//! ```text
//!  0        8      12        20        28  29    33                                 73
//!  +--------+------+---------+---------+---+-----+----------------------------------+--------
//!  | base   | len  | raft    | raft    | m | crc | attributes, last offset delta,   | records
//!  | offset |      | term    | index   |   |     | timestamps, producer, count      | …
//!  +--------+------+---------+---------+---+-----+----------------------------------+--------
//!  \________ written by the sidecar _______/      \______________ covered by the CRC ________/
//! ```

mod builder;
mod header;
mod record;

use bytes::Bytes;

pub use builder::{BatchBuilder, HeaderPieces};
pub use header::{
    BatchHeader, CRC_START, Compression, HEADER_LEN, MAGIC, ProducerState, RaftLogId,
};
pub use record::{
    HeaderIter, Record, RecordHeader, RecordIter, RecordRef, SharedHeaders, fault, header_len,
    put_header, split_body, walk,
};

use crate::Offset;

/// A decoded record batch.
///
/// [`RecordBatch::encode`] derives the header's length, CRC, counts and timestamps from the
/// body, so `decode(encode(b)) == b` for every batch that encodes. A batch whose records share
/// headers decodes with every record's headers in full (its own, then the shared ones it has
/// none of the same name of); `encode` writes each record's headers with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// Offset of the first record (assigned by the sidecar when it appends the batch).
    pub base_offset: Offset,
    /// The Raft entry this batch is (assigned by the sidecar).
    pub raft: RaftLogId,
    /// Compression of the records.
    pub compression: Compression,
    /// Idempotence fields.
    pub producer: ProducerState,
    /// Records or control payload.
    pub body: BatchBody,
}

/// What a batch carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchBody {
    /// A control batch: a Raft entry that is not data.
    Control(ControlRecord),
    /// A data batch: one or more records with increasing offset deltas.
    Records(Vec<Record>),
}

/// The payload of a control batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    /// What the entry is.
    pub kind: ControlKind,
    /// When the entry was created (ms since the Unix epoch).
    pub timestamp: i64,
    /// Kind-specific bytes (for a membership entry, the encoded membership).
    pub payload: Bytes,
}

/// The kinds of control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlKind {
    /// A Raft blank entry (written by a new leader).
    Blank,
    /// A Raft membership entry.
    Membership,
    /// A consumer group's command kept in the partition's Raft state (a member taking the
    /// partition over, or committing its position).
    Group,
}

/// Why bytes are not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the length field says.
    #[error("truncated batch: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The length field is smaller than the header.
    #[error("bad batch length {0}")]
    BadLength(u32),
    /// The format version byte is not one this crate reads.
    #[error("unknown batch format version (magic {0})")]
    UnknownMagic(u8),
    /// The stored CRC does not match the bytes.
    #[error("bad crc: stored {stored:#010x}, computed {actual:#010x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        actual: u32,
    },
    /// The compression codec is not supported.
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u16),
    /// Attribute bits this version does not define are set.
    #[error("unknown attribute bits {0:#06x}")]
    UnknownAttributes(u16),
    /// A control batch claims records.
    #[error("control batch with records")]
    ControlWithRecords,
    /// A control batch's payload is empty or of an unknown kind.
    #[error("bad control payload: {0}")]
    BadControl(&'static str),
    /// The record count does not fit the offset span.
    #[error("bad record count {count} for last offset delta {last_offset_delta}")]
    BadRecordCount {
        /// Records the header claims.
        count: u32,
        /// Last offset delta the header claims.
        last_offset_delta: u32,
    },
    /// The max timestamp is below the first.
    #[error("bad timestamps: first {first}, max {max}")]
    BadTimestamps {
        /// First timestamp.
        first: i64,
        /// Max timestamp.
        max: i64,
    },
    /// The headers the records share (attribute bit 5) are malformed.
    #[error("bad shared headers: {0}")]
    BadSharedHeaders(&'static str),
    /// A record is malformed.
    #[error("bad record at body byte {position}: {reason}")]
    BadRecord {
        /// Byte position in the body where the record starts.
        position: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The records disagree with the header (count, last offset delta or timestamps).
    #[error("records disagree with the header: {0}")]
    HeaderMismatch(&'static str),
}

/// Why a batch cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A data batch with no records.
    #[error("a data batch needs at least one record")]
    Empty,
    /// Record offset deltas must increase.
    #[error("record offset deltas do not increase at record {0}")]
    OffsetDeltas(usize),
    /// The batch would exceed 4 GiB.
    #[error("batch of {0} bytes is too large")]
    TooLarge(usize),
    /// Headers to share that are more than 64, or not one for each the batch shares.
    #[error("{0} shared headers: a batch shares at most 64, and a record gives one for each")]
    SharedHeaders(usize),
}

impl RecordBatch {
    /// A data batch of `records` with dense offset deltas (0, 1, 2, …) and no producer state.
    pub fn from_records(
        records: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>, i64)>,
    ) -> Self {
        let records = records
            .into_iter()
            .zip(0u32..)
            .map(|((key, value, timestamp), offset_delta)| Record {
                offset_delta,
                timestamp,
                key,
                value,
                headers: Vec::new(),
            })
            .collect();
        Self {
            base_offset: 0,
            raft: RaftLogId::default(),
            compression: Compression::None,
            producer: ProducerState::NONE,
            body: BatchBody::Records(records),
        }
    }

    /// A control batch.
    pub fn control(kind: ControlKind, timestamp: i64, payload: Bytes) -> Self {
        Self {
            base_offset: 0,
            raft: RaftLogId::default(),
            compression: Compression::None,
            producer: ProducerState::NONE,
            body: BatchBody::Control(ControlRecord {
                kind,
                timestamp,
                payload,
            }),
        }
    }

    /// Encodes the batch, computing its length, counts, timestamps and CRC.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let (control, last_offset_delta, record_count, first_timestamp, max_timestamp) =
            match &self.body {
                BatchBody::Control(c) => (true, 0, 0, c.timestamp, c.timestamp),
                BatchBody::Records(records) => {
                    let first = records.first().ok_or(EncodeError::Empty)?;
                    for (i, pair) in records.windows(2).enumerate() {
                        if pair[1].offset_delta <= pair[0].offset_delta {
                            return Err(EncodeError::OffsetDeltas(i + 1));
                        }
                    }
                    let last = records.last().map_or(0, |r| r.offset_delta);
                    let max = records
                        .iter()
                        .map(|r| r.timestamp)
                        .max()
                        .unwrap_or(first.timestamp);
                    let count = u32::try_from(records.len())
                        .map_err(|_| EncodeError::TooLarge(records.len()))?;
                    (false, last, count, first.timestamp, max)
                }
            };
        let body_len = match &self.body {
            BatchBody::Control(c) => 1 + c.payload.len(),
            BatchBody::Records(records) => records
                .iter()
                .map(|r| record::encoded_len(r, first_timestamp))
                .sum(),
        };
        let total = HEADER_LEN + body_len;
        let length = u32::try_from(total).map_err(|_| EncodeError::TooLarge(total))?;
        let mut out = Vec::with_capacity(total);
        out.resize(HEADER_LEN, 0);
        match &self.body {
            BatchBody::Control(c) => {
                out.push(match c.kind {
                    ControlKind::Blank => CONTROL_BLANK,
                    ControlKind::Membership => CONTROL_MEMBERSHIP,
                    ControlKind::Group => CONTROL_GROUP,
                });
                out.extend_from_slice(&c.payload);
            }
            BatchBody::Records(records) => {
                for r in records {
                    record::encode_record(&mut out, r, first_timestamp);
                }
            }
        }
        debug_assert_eq!(out.len(), total);
        let mut header = BatchHeader {
            base_offset: self.base_offset,
            length,
            raft: self.raft,
            crc: 0,
            compression: self.compression,
            control,
            shared_headers: false,
            last_offset_delta,
            first_timestamp,
            max_timestamp,
            producer: self.producer,
            record_count,
        };
        header.write(&mut out[..HEADER_LEN]);
        header.crc = crc32c::crc32c(&out[CRC_START..]);
        header.write(&mut out[..HEADER_LEN]);
        Ok(out)
    }

    /// Decodes and fully checks one batch occupying all of `bytes`.
    ///
    /// Keys, values and header values are slices of `bytes`, not copies.
    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        let header = validate(bytes)?;
        let body = &bytes[HEADER_LEN..];
        let body = if header.control {
            BatchBody::Control(decode_control(&header, &bytes.slice(HEADER_LEN..))?)
        } else {
            let mut records = Vec::with_capacity(header.record_count as usize);
            for r in RecordIter::new(&header, body) {
                let r = r?;
                let headers = r
                    .headers()
                    .map(|(key, value)| RecordHeader {
                        key: key.to_owned(),
                        value: bytes.slice_ref(value),
                    })
                    .collect();
                records.push(Record {
                    offset_delta: r.offset_delta,
                    timestamp: header.first_timestamp.wrapping_add(r.timestamp_delta),
                    key: r.key.map(|k| bytes.slice_ref(k)),
                    value: r.value.map(|v| bytes.slice_ref(v)),
                    headers,
                });
            }
            BatchBody::Records(records)
        };
        Ok(Self {
            base_offset: header.base_offset,
            raft: header.raft,
            compression: header.compression,
            producer: header.producer,
            body,
        })
    }
}

/// A batch that [`validate`] accepted: its bytes and its header. Appending one skips the
/// checks a second time ([`Log::append_valid`](crate::Log::append_valid)).
#[derive(Debug, Clone, Copy)]
pub struct ValidBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> ValidBatch<'a> {
    /// Validates `bytes` as one whole batch (see [`validate`]).
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = validate(bytes)?;
        Ok(Self { bytes, header })
    }

    /// A batch whose CRC and records were checked before (by [`validate`] where it was taken
    /// in) or which was built here, and has not crossed a trust boundary since: only its header
    /// is parsed and its length checked against `bytes`.
    pub fn checked_before(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = BatchHeader::parse(bytes)?;
        if bytes.len() != header.length as usize {
            return Err(DecodeError::Truncated {
                needed: header.length as usize,
                available: bytes.len(),
            });
        }
        Ok(Self { bytes, header })
    }

    /// The batch's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
}

/// Checks `batch`'s header and CRC, not its records, and returns its header: for a batch
/// whose records were checked by [`validate`] where it was first taken in (a leader's log,
/// read back and sent to a follower), which the CRC shows unchanged since.
pub fn validate_crc(batch: &[u8]) -> Result<BatchHeader, DecodeError> {
    let header = BatchHeader::parse(batch)?;
    header.verify_crc(batch)?;
    Ok(header)
}

/// Checks that `batch` is exactly one well-formed batch (header, CRC, and every record or the
/// control payload) without allocating, and returns its header.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, DecodeError> {
    let header = BatchHeader::parse(batch)?;
    header.verify_crc(batch)?;
    let body = &batch[HEADER_LEN..];
    if header.control {
        match body.first() {
            Some(&(CONTROL_BLANK | CONTROL_MEMBERSHIP | CONTROL_GROUP)) => {}
            Some(_) => return Err(DecodeError::BadControl("unknown control kind")),
            None => return Err(DecodeError::BadControl("empty control payload")),
        }
        if header.first_timestamp != header.max_timestamp {
            return Err(DecodeError::HeaderMismatch(
                "control batch timestamps differ",
            ));
        }
        return Ok(header);
    }
    // The quick pass says only whether every record is well formed; the full one runs only
    // for a batch it refuses, to name what is wrong.
    let Some((last_delta, max_timestamp)) = record::scan(&header, body) else {
        return Err(fault(&header, body));
    };
    if last_delta != header.last_offset_delta {
        return Err(DecodeError::HeaderMismatch("last offset delta"));
    }
    if max_timestamp != header.max_timestamp {
        return Err(DecodeError::HeaderMismatch("max timestamp"));
    }
    Ok(header)
}

fn decode_control(header: &BatchHeader, body: &Bytes) -> Result<ControlRecord, DecodeError> {
    let kind = match body.first() {
        Some(&CONTROL_BLANK) => ControlKind::Blank,
        Some(&CONTROL_MEMBERSHIP) => ControlKind::Membership,
        Some(&CONTROL_GROUP) => ControlKind::Group,
        Some(_) => return Err(DecodeError::BadControl("unknown control kind")),
        None => return Err(DecodeError::BadControl("empty control payload")),
    };
    Ok(ControlRecord {
        kind,
        timestamp: header.first_timestamp,
        payload: body.slice(1..),
    })
}

const CONTROL_BLANK: u8 = 0;
const CONTROL_MEMBERSHIP: u8 = 1;
const CONTROL_GROUP: u8 = 2;

#[cfg(test)]
mod tests;
