//! Turning one record batch of a subscription frame into delivery items: validate it, skip
//! what lies below the partition's next offset and control batches, note where each record
//! lies in the batch's bytes; then, one at a time as they are handed out, check each event's
//! type and decode it. Pure: no IO, no locks.
//!
//! A batch is checked whole before anything of it is delivered (a bad record drops it all),
//! but what is queued per record is only its [`RecordSpan`], a few offsets into the batch's
//! bytes: the delivery itself is built once, when it is handed out.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use sidestream_log::batch::{BatchHeader, HEADER_LEN, fault, walk};

use super::delivery::{Acker, Delivery, Payload, RecordAt};
use crate::{Error, Headers};

/// One item of a batch, in offset order.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A record to hand out.
    Record(RecordSpan),
    /// Everything below this offset is dealt with: the end of the batch.
    Advance(u64),
}

/// Where one record of a validated batch lies in the batch's bytes.
#[derive(Debug, Clone)]
pub(crate) struct RecordSpan {
    pub(crate) offset: u64,
    timestamp: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    headers: Range<usize>,
    header_count: u32,
    /// The headers the batch's records share (its own override them by name).
    shared: Range<usize>,
    shared_count: u32,
}

/// Where the batch comes from.
pub(crate) struct BatchSource<'a> {
    pub(crate) topic: &'a Arc<str>,
    pub(crate) partition: u32,
    /// The next offset to deliver: records below it were delivered already.
    pub(crate) next: u64,
}

/// Appends the items of `batch` to `out`.
///
/// # Errors
///
/// [`Error::CorruptBatch`] if the batch fails validation (length, CRC, a record); nothing is
/// appended then.
pub(crate) fn decode_batch(
    source: &BatchSource<'_>,
    batch: &Bytes,
    out: &mut VecDeque<Item>,
) -> Result<(), Error> {
    let corrupt = |error| Error::CorruptBatch {
        topic: source.topic.to_string(),
        partition: source.partition,
        source: error,
    };
    // Header and CRC here; the records are checked as they are read below (a bad one drops
    // the whole batch, as do bytes after the last one), so the batch is parsed once, not
    // twice as `validate` would.
    let header = BatchHeader::parse(batch).map_err(corrupt)?;
    header.verify_crc(batch).map_err(corrupt)?;
    if !header.control {
        let body = batch.get(HEADER_LEN..).unwrap_or_default();
        let start = out.len();
        let within = |part: &[u8]| {
            let at = part.as_ptr().addr() - batch.as_ptr().addr();
            at..at + part.len()
        };
        let whole = walk(&header, body, |record| {
            let offset = header
                .base_offset
                .saturating_add(u64::from(record.offset_delta));
            if offset >= source.next {
                out.push_back(Item::Record(RecordSpan {
                    offset,
                    timestamp: header.first_timestamp.wrapping_add(record.timestamp_delta),
                    key: record.key.map(within),
                    value: record.value.map(within),
                    headers: within(record.header_wire()),
                    // A record's headers take two bytes each at least: far fewer than 2^32
                    // fit.
                    header_count: u32::try_from(record.header_count()).unwrap_or(u32::MAX),
                    shared: within(record.shared().wire()),
                    shared_count: u32::try_from(record.shared().count()).unwrap_or(u32::MAX),
                }));
            }
        });
        if !whole {
            out.truncate(start);
            // The quick pass names no fault: a slower one finds and names it.
            return Err(corrupt(fault(&header, body)));
        }
    }
    // Computed here rather than by `next_offset`, which could overflow on hostile bytes.
    out.push_back(Item::Advance(
        header.base_offset.saturating_add(header.offset_count()),
    ));
    Ok(())
}

/// The delivery of the record at `span` of `batch` (which [`decode_batch`] validated), read
/// from `partition` of `topic`, or the error that keeps it from being delivered as `T`
/// (another type, a bad value).
pub(crate) fn deliver<T: Payload>(
    topic: &Arc<str>,
    partition: u32,
    batch: &Bytes,
    span: RecordSpan,
    acker: &Acker,
) -> Result<Delivery<T>, Error> {
    let part = |range: Range<usize>| batch.slice(range);
    let headers = Headers::from_wire(
        part(span.headers),
        span.header_count,
        (part(span.shared), span.shared_count),
        span.timestamp,
    );
    let key = span.key.map(part);
    let value = span.value.map(part);
    let payload = T::from_record(topic, partition, span.offset, key.as_ref(), value, headers)?;
    let at = RecordAt {
        partition,
        offset: span.offset,
        timestamp: span.timestamp,
    };
    Ok(Delivery::new(payload, at, key, acker.clone()))
}
