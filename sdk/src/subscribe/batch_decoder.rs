//! Turning one record batch of a subscription frame into delivery items: validate it, skip
//! what lies below the partition's next offset and control batches, check each event's type,
//! decode. Pure: no IO, no locks.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use sidestream_log::batch::{BatchHeader, HEADER_LEN, RecordIter};

use super::delivery::{Acker, Delivery, Payload, RecordAt};
use crate::{Error, Headers};

/// One item of a batch, in offset order.
#[derive(Debug)]
pub(crate) enum Item<T> {
    /// An event to hand out.
    Deliver(Delivery<T>),
    /// A record that cannot be delivered as `T` (type mismatch, bad value): reported to the
    /// subscriber, and counted as handled.
    Fail(Error, u64),
    /// Everything below this offset is dealt with: the end of the batch.
    Advance(u64),
}

/// Where the batch comes from.
pub(crate) struct BatchSource<'a> {
    pub(crate) topic: &'a Arc<str>,
    pub(crate) partition: u32,
    /// The next offset to deliver: records below it were delivered already.
    pub(crate) next: u64,
    pub(crate) acker: &'a Acker,
}

/// Appends the items of `batch` to `out`.
///
/// # Errors
///
/// [`Error::CorruptBatch`] if the batch fails validation (length, CRC, a record); nothing is
/// appended then.
pub(crate) fn decode_batch<T: Payload>(
    source: &BatchSource<'_>,
    batch: &Bytes,
    out: &mut VecDeque<Item<T>>,
) -> Result<(), Error> {
    let corrupt = |error| Error::CorruptBatch {
        topic: source.topic.to_string(),
        partition: source.partition,
        source: error,
    };
    // Header and CRC here; the records are checked as they are read below (a bad one drops
    // the whole batch), so the batch is parsed once, not twice as `validate` would.
    let header = BatchHeader::parse(batch).map_err(corrupt)?;
    header.verify_crc(batch).map_err(corrupt)?;
    if !header.control {
        let body = batch.get(HEADER_LEN..).unwrap_or_default();
        let start = out.len();
        for record in RecordIter::new(body, header.record_count) {
            let record = match record {
                Ok(record) => record,
                Err(error) => {
                    out.truncate(start);
                    return Err(corrupt(error));
                }
            };
            let offset = header
                .base_offset
                .saturating_add(u64::from(record.offset_delta));
            if offset < source.next {
                continue;
            }
            let timestamp = header.first_timestamp.wrapping_add(record.timestamp_delta);
            let headers = Headers::from_wire(
                batch.slice_ref(record.header_wire()),
                // A record's headers take two bytes each at least: far fewer than 2^32 fit.
                u32::try_from(record.header_count()).unwrap_or(u32::MAX),
                timestamp,
            );
            let key = record.key.map(|key| batch.slice_ref(key));
            let value = record.value.map(|value| batch.slice_ref(value));
            let at = RecordAt {
                topic: source.topic,
                partition: source.partition,
                offset,
                timestamp,
            };
            match T::from_record(
                source.topic,
                source.partition,
                offset,
                key.as_ref(),
                value,
                &headers,
            ) {
                Ok(event) => out.push_back(Item::Deliver(Delivery::new(
                    event,
                    at,
                    key,
                    headers,
                    source.acker.clone(),
                ))),
                Err(error) => out.push_back(Item::Fail(error, offset)),
            }
        }
    }
    // Computed here rather than by `next_offset`, which could overflow on hostile bytes.
    out.push_back(Item::Advance(
        header.base_offset.saturating_add(header.offset_count()),
    ));
    Ok(())
}
