//! Building a data batch record by record, straight into its wire bytes.

use std::ops::Range;

use crate::batch::record::{SECTION_MARK, header_len, put_header};
use crate::batch::{
    BatchHeader, CRC_START, Compression, EncodeError, HEADER_LEN, ProducerState, RaftLogId,
};
use crate::varint;

/// Builds one data batch by appending records to its encoded bytes, with no per-record
/// allocation; [`BatchBuilder::finish`] writes the header and CRC.
///
/// The bytes equal what [`RecordBatch::encode`](crate::RecordBatch::encode) produces for the
/// same records with dense offset deltas.
///
/// ```
/// use sidestream_log::batch::BatchBuilder;
///
/// let mut builder = BatchBuilder::new();
/// builder.push(1_700_000_000_000, Some(b"order-1"), Some(b"placed"), &[("type", b"shop.OrderPlaced.v1")])?;
/// builder.push(1_700_000_000_004, None, Some(b"placed"), &[])?;
/// let batch = builder.finish()?;
/// assert_eq!(sidestream_log::batch::validate(&batch)?.record_count, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer: ProducerState,
    /// Where each header the next record shares lies in `buf`: none if the records share
    /// none.
    shared: Vec<Range<usize>>,
}

/// Headers in their wire form (each as [`put_header`] writes it), given in pieces: header `i`
/// is the next `per_header[i]` pieces, concatenated. A publisher builds the parts that differ
/// between its events (an id, a trace) on the stack and passes the rest as they are.
#[derive(Debug, Clone, Copy)]
pub struct HeaderPieces<'a> {
    /// The pieces, in order.
    pub pieces: &'a [&'a [u8]],
    /// How many pieces each header takes.
    pub per_header: &'a [usize],
}

impl<'a> HeaderPieces<'a> {
    /// Each header's pieces.
    fn headers(self) -> impl Iterator<Item = &'a [&'a [u8]]> {
        let mut at = 0usize;
        self.per_header.iter().map(move |&n| {
            let end = at.saturating_add(n).min(self.pieces.len());
            let header = &self.pieces[at.min(end)..end];
            at = end;
            header
        })
    }
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty builder whose buffer holds `bytes` before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            producer: ProducerState::NONE,
            shared: Vec::new(),
        }
    }

    /// An empty builder (with room for `bytes`) whose records share `shared`'s headers: a
    /// record pushed with [`push_sharing`](Self::push_sharing) carries one of them itself only
    /// where its own value differs (docs/STORAGE.md, "Shared headers"). With no headers, a
    /// batch without shared headers.
    ///
    /// ```
    /// use sidestream_log::batch::{BatchBuilder, HeaderPieces, RecordIter, put_header, validate};
    ///
    /// let (mut source, mut id_a, mut id_b) = (Vec::new(), Vec::new(), Vec::new());
    /// put_header(&mut source, "source", b"order-service");
    /// put_header(&mut id_a, "id", b"a");
    /// put_header(&mut id_b, "id", b"b");
    /// let shared = HeaderPieces { pieces: &[&source], per_header: &[1] };
    /// let mut builder = BatchBuilder::with_shared_headers(0, shared)?;
    /// let (a, b) = ([&id_a[..]], [&id_b[..]]);
    /// let a = HeaderPieces { pieces: &a, per_header: &[1] };
    /// let b = HeaderPieces { pieces: &b, per_header: &[1] };
    /// builder.push_sharing(1_700_000_000_000, None, Some(b"placed"), a, shared)?;
    /// builder.push_sharing(1_700_000_000_001, None, Some(b"paid"), b, shared)?;
    /// let batch = builder.finish()?;
    /// let header = validate(&batch)?;
    /// let body = &batch[sidestream_log::batch::HEADER_LEN..];
    /// let second = RecordIter::new(&header, body).nth(1).unwrap()?;
    /// let headers: Vec<_> = second.headers().collect();
    /// assert_eq!(headers, [("id", &b"b"[..]), ("source", &b"order-service"[..])]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_shared_headers(
        bytes: usize,
        shared: HeaderPieces<'_>,
    ) -> Result<Self, EncodeError> {
        let mut builder = Self::with_capacity(bytes);
        let count = shared.per_header.len();
        if count == 0 {
            return Ok(builder);
        }
        if count > MAX_SHARED {
            return Err(EncodeError::SharedHeaders(count));
        }
        builder.write_section(shared);
        Ok(builder)
    }

    /// Sets the idempotence fields written into the header.
    pub fn set_producer(&mut self, producer: ProducerState) {
        self.producer = producer;
    }

    /// Records pushed so far.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch so far, header included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The most bytes one record with these fields adds to a batch (its exact size, give or
    /// take the few bytes its timestamp delta may take).
    pub fn record_size_bound(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> usize {
        let headers_len = pairs_len(headers);
        let body = body_len(
            i64::MAX,
            u64::from(u32::MAX),
            key,
            value,
            headers.len() as u64,
            headers_len,
        );
        varint::len_u64(body as u64) + body
    }

    /// Appends one record; its offset delta is the number of records before it.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), EncodeError> {
        let headers_len = pairs_len(headers);
        let out = self.start_record(timestamp, key, value, headers.len() as u64, headers_len)?;
        for (name, value) in headers {
            put_header(out, name, value);
        }
        Ok(())
    }

    /// Appends one record whose `header_count` headers come already in their wire form, each
    /// as [`put_header`] writes it, in `header_wire`'s pieces (concatenated in order): a
    /// publisher that writes the same headers on every event encodes their names once.
    ///
    /// The pieces must hold exactly `header_count` well-formed headers; the batch is checked
    /// again where it is taken in (`validate`), but a builder given anything else writes a
    /// batch that is refused there.
    ///
    /// ```
    /// use sidestream_log::batch::{BatchBuilder, put_header};
    ///
    /// let mut name = Vec::new();
    /// put_header(&mut name, "source", b"order-service");
    /// let mut builder = BatchBuilder::new();
    /// builder.push_wire(1_700_000_000_000, None, Some(b"placed"), 1, &[&name])?;
    /// let batch = builder.finish()?;
    /// assert_eq!(sidestream_log::batch::validate(&batch)?.record_count, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_wire(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        header_count: u64,
        header_wire: &[&[u8]],
    ) -> Result<(), EncodeError> {
        let headers_len = header_wire.iter().map(|piece| piece.len()).sum();
        let out = self.start_record(timestamp, key, value, header_count, headers_len)?;
        for piece in header_wire {
            out.extend_from_slice(piece);
        }
        Ok(())
    }

    /// Appends one record with headers of its own (`own`) and the headers it would share, one
    /// for each of the batch's shared headers, of the same name and in the same order
    /// ([`with_shared_headers`](Self::with_shared_headers)): one equal to the batch's is left
    /// to it, one that differs is written with the record, which then has that header's value
    /// instead.
    ///
    /// # Errors
    ///
    /// [`EncodeError::SharedHeaders`] if `shareable` has another number of headers than the
    /// batch shares; what [`push`](Self::push) refuses.
    #[inline]
    pub fn push_sharing(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        own: HeaderPieces<'_>,
        shareable: HeaderPieces<'_>,
    ) -> Result<(), EncodeError> {
        self.push_shared(timestamp, key, value, own, shareable, false)
    }

    /// As [`push_sharing`](Self::push_sharing), but if `shareable` differs from the batch's
    /// shared headers, its headers become the ones this record and the later ones share (a
    /// new section of shared headers starts here): for a record whose headers the next ones
    /// likely have too (a publisher's batch call, all in one trace). The record and its
    /// section then add at most 2 bytes more than [`record_size_bound`](Self::record_size_bound)
    /// gives for all its headers (the section's mark and count).
    ///
    /// # Errors
    ///
    /// As [`push_sharing`](Self::push_sharing).
    #[inline]
    pub fn push_resharing(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        own: HeaderPieces<'_>,
        shareable: HeaderPieces<'_>,
    ) -> Result<(), EncodeError> {
        self.push_shared(timestamp, key, value, own, shareable, true)
    }

    #[inline]
    fn push_shared(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        own: HeaderPieces<'_>,
        shareable: HeaderPieces<'_>,
        reshare: bool,
    ) -> Result<(), EncodeError> {
        if self.count == u32::MAX {
            return Err(EncodeError::TooLarge(self.buf.len()));
        }
        if shareable.per_header.len() != self.shared.len() {
            return Err(EncodeError::SharedHeaders(shareable.per_header.len()));
        }
        // Which of them differ from the batch's (at most MAX_SHARED of them): a plain loop,
        // as this runs once per event.
        let mut differ = 0u64;
        let own_len: usize = own.pieces.iter().map(|piece| piece.len()).sum();
        let mut headers_len = own_len;
        let mut next = 0usize;
        for (i, (&n, at)) in shareable.per_header.iter().zip(&self.shared).enumerate() {
            let end = next.saturating_add(n);
            let header = shareable.pieces.get(next..end).unwrap_or_default();
            next = end;
            let stored = &self.buf[at.clone()];
            let equal = match header {
                [whole] => *whole == stored,
                _ => pieces_equal(header, stored),
            };
            if !equal {
                differ |= 1 << i;
                headers_len += header.iter().map(|piece| piece.len()).sum::<usize>();
            }
        }
        if reshare && differ != 0 {
            self.buf.push(SECTION_MARK);
            self.write_section(shareable);
            differ = 0;
            headers_len = own_len;
        }
        let count = own.per_header.len() as u64 + u64::from(differ.count_ones());
        let out = self.start_record(timestamp, key, value, count, headers_len)?;
        for piece in own.pieces {
            out.extend_from_slice(piece);
        }
        if differ != 0 {
            for (i, header) in shareable.headers().enumerate() {
                if differ & (1 << i) != 0 {
                    for piece in header {
                        out.extend_from_slice(piece);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes a section of shared headers (their count, then each), which the records after
    /// it share.
    fn write_section(&mut self, shared: HeaderPieces<'_>) {
        varint::put_u64(&mut self.buf, shared.per_header.len() as u64);
        self.shared.clear();
        for header in shared.headers() {
            let start = self.buf.len();
            for piece in header {
                self.buf.extend_from_slice(piece);
            }
            self.shared.push(start..self.buf.len());
        }
    }

    /// Writes one record up to its headers (their count included), with room reserved for
    /// the `headers_len` bytes of headers the caller writes next into the returned buffer.
    fn start_record(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        header_count: u64,
        headers_len: usize,
    ) -> Result<&mut Vec<u8>, EncodeError> {
        if self.count == u32::MAX {
            return Err(EncodeError::TooLarge(self.buf.len()));
        }
        if self.count == 0 {
            self.first_timestamp = timestamp;
        }
        let timestamp_delta = timestamp.wrapping_sub(self.first_timestamp);
        let offset_delta = u64::from(self.count);
        let out = &mut self.buf;
        let len = body_len(
            timestamp_delta,
            offset_delta,
            key,
            value,
            header_count,
            headers_len,
        );
        out.reserve(varint::len_u64(len as u64) + len);
        varint::put_u64(out, len as u64);
        out.push(0);
        varint::put_i64(out, timestamp_delta);
        varint::put_u64(out, offset_delta);
        put_nullable(out, key);
        put_nullable(out, value);
        varint::put_u64(out, header_count);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        Ok(out)
    }

    /// Writes the header and CRC and returns the batch's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        if self.count == 0 {
            return Err(EncodeError::Empty);
        }
        let length =
            u32::try_from(self.buf.len()).map_err(|_| EncodeError::TooLarge(self.buf.len()))?;
        let mut header = BatchHeader {
            base_offset: 0,
            length,
            raft: RaftLogId::default(),
            crc: 0,
            compression: Compression::None,
            control: false,
            shared_headers: !self.shared.is_empty(),
            last_offset_delta: self.count - 1,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer: self.producer,
            record_count: self.count,
        };
        header.write(&mut self.buf[..HEADER_LEN]);
        header.crc = crc32c::crc32c(&self.buf[CRC_START..]);
        header.write(&mut self.buf[..HEADER_LEN]);
        Ok(self.buf)
    }
}

fn body_len(
    timestamp_delta: i64,
    offset_delta: u64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    header_count: u64,
    headers_len: usize,
) -> usize {
    let nullable = |v: Option<&[u8]>| match v {
        None => varint::len_i64(-1),
        Some(b) => varint::len_i64(signed_len(b.len())) + b.len(),
    };
    1 + varint::len_i64(timestamp_delta)
        + varint::len_u64(offset_delta)
        + nullable(key)
        + nullable(value)
        + varint::len_u64(header_count)
        + headers_len
}

/// The most headers a batch's records share.
const MAX_SHARED: usize = 64;

/// Whether `pieces`, concatenated, are `bytes`.
fn pieces_equal(pieces: &[&[u8]], mut bytes: &[u8]) -> bool {
    for piece in pieces {
        let Some((head, rest)) = bytes.split_at_checked(piece.len()) else {
            return false;
        };
        if head != *piece {
            return false;
        }
        bytes = rest;
    }
    bytes.is_empty()
}

/// The bytes `headers` take encoded.
fn pairs_len(headers: &[(&str, &[u8])]) -> usize {
    headers
        .iter()
        .map(|(name, value)| header_len(name, value))
        .sum()
}

fn put_nullable(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => varint::put_i64(out, -1),
        Some(bytes) => {
            varint::put_i64(out, signed_len(bytes.len()));
            out.extend_from_slice(bytes);
        }
    }
}

fn signed_len(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}
