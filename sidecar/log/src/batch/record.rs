//! Records inside a data batch: encoding, and a zero-copy iterator over untrusted bytes.

use bytes::Bytes;

use crate::batch::{BatchHeader, DecodeError};
use crate::varint::{self, ReadFault, Reader};

/// One event inside a record batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset of this record relative to the batch's base offset.
    pub offset_delta: u32,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Partitioning and compaction key; `None` for an unkeyed event.
    pub key: Option<Bytes>,
    /// The encoded event; `None` is a tombstone for compacted topics.
    pub value: Option<Bytes>,
    /// Event headers (`id`, `type`, `source`, `traceparent`, …) in order.
    pub headers: Vec<RecordHeader>,
}

/// One header of a record: a UTF-8 name and an opaque value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: Bytes,
}

/// A record borrowed from a batch's bytes, as [`RecordIter`] yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Offset relative to the batch's base offset.
    pub offset_delta: u32,
    /// Timestamp relative to the batch's first timestamp.
    pub timestamp_delta: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value, if any.
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u64,
    shared: SharedHeaders<'a>,
}

impl<'a> RecordRef<'a> {
    /// The record's headers, already checked to be well formed: its own, then the batch's
    /// shared headers it has none of the same name of.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter::with_shared(self.headers, self.header_count, self.shared)
    }

    /// The record's own headers in their wire form (each a varint name length, the UTF-8
    /// name, a varint value length and the value), for keeping them without parsing them now;
    /// read them back with [`HeaderIter::with_shared`], [`header_count`](Self::header_count)
    /// and [`shared`](Self::shared).
    pub fn header_wire(&self) -> &'a [u8] {
        self.headers
    }

    /// How many headers of its own the record has.
    pub fn header_count(&self) -> u64 {
        self.header_count
    }

    /// The headers of the record's batch that it has unless it has its own of the same name.
    pub fn shared(&self) -> SharedHeaders<'a> {
        self.shared
    }
}

/// The headers every record of a data batch has unless it has its own of the same name
/// (attribute bit 5): a publisher writes what its events have in common (their source, type
/// and trace) once per batch instead of once per event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedHeaders<'a> {
    wire: &'a [u8],
    count: u64,
}

impl<'a> SharedHeaders<'a> {
    /// `count` headers in `wire` (as [`SharedHeaders::wire`] gave them), for reading them back
    /// with [`HeaderIter::with_shared`].
    pub fn new(wire: &'a [u8], count: u64) -> Self {
        Self { wire, count }
    }

    /// The shared headers in their wire form (as [`RecordRef::header_wire`]).
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// How many there are.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Splits the body of data batch `header` into its shared headers (none unless the header
/// says there are) and its records, checking the shared headers.
pub fn split_body<'a>(
    header: &BatchHeader,
    body: &'a [u8],
) -> Result<(SharedHeaders<'a>, &'a [u8]), DecodeError> {
    if !header.shared_headers {
        // None: an empty slice of the body (a reader may locate it in the batch's bytes).
        return Ok((SharedHeaders::new(&body[..0], 0), body));
    }
    let mut reader = Reader::new(body);
    let shared = read_section(&mut reader).map_err(section_error)?;
    Ok((shared, reader.rest()))
}

/// Reads a section of shared headers: a count, then that many headers.
#[expect(
    clippy::inline_always,
    reason = "called once per record or header; see varint.rs"
)]
#[inline(always)]
fn read_section<'a>(reader: &mut Reader<'a>) -> Result<SharedHeaders<'a>, HeaderFault> {
    let count = reader.u64()?;
    let wire = reader.rest();
    let start = reader.position();
    // Each header takes at least two bytes, so this ends with the body's bytes.
    for _ in 0..count {
        check_header(reader)?;
    }
    Ok(SharedHeaders {
        wire: &wire[..reader.position() - start],
        count,
    })
}

/// Before a record of a batch with shared headers: a new section if one starts here (a zero
/// where the record's length would be), else the one before.
#[expect(
    clippy::inline_always,
    reason = "called once per record or header; see varint.rs"
)]
#[inline(always)]
fn next_section<'a>(
    reader: &mut Reader<'a>,
    sections: bool,
    shared: SharedHeaders<'a>,
) -> Result<SharedHeaders<'a>, HeaderFault> {
    if sections && reader.rest().first() == Some(&SECTION_MARK) {
        reader.u8()?;
        read_section(reader)
    } else {
        Ok(shared)
    }
}

/// The byte that starts a new section of shared headers among the records: a record's length
/// is never 0.
pub(crate) const SECTION_MARK: u8 = 0;

fn section_error(fault: HeaderFault) -> DecodeError {
    DecodeError::BadSharedHeaders(match fault {
        HeaderFault::Read(ReadFault::Truncated) => "truncated",
        HeaderFault::Read(ReadFault::Overlong) => "varint overflow",
        HeaderFault::NotUtf8 => "header name is not UTF-8",
    })
}

/// The headers of one record, read from their wire form.
///
/// Ends at the first header that is not well formed (headers that came through
/// [`RecordIter`] or were written by [`put_header`] always are).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    remaining: u64,
    own: &'a [u8],
    own_count: u64,
    shared: Reader<'a>,
    shared_remaining: u64,
}

impl<'a> HeaderIter<'a> {
    /// Iterates over the first `count` headers in `wire`.
    pub fn new(wire: &'a [u8], count: u64) -> Self {
        Self::with_shared(wire, count, SharedHeaders::default())
    }

    /// Iterates over a record's headers: the first `count` in `wire` (its own), then each of
    /// `shared` whose name none of those has.
    pub fn with_shared(wire: &'a [u8], count: u64, shared: SharedHeaders<'a>) -> Self {
        Self {
            reader: Reader::new(wire),
            remaining: count,
            own: wire,
            own_count: count,
            shared: Reader::new(shared.wire),
            shared_remaining: shared.count,
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining > 0 {
            self.remaining -= 1;
            let header = read_header(&mut self.reader).ok();
            if header.is_none() {
                self.remaining = 0;
                self.shared_remaining = 0;
            }
            return header;
        }
        while self.shared_remaining > 0 {
            self.shared_remaining -= 1;
            let Ok((name, value)) = read_header(&mut self.shared) else {
                self.shared_remaining = 0;
                return None;
            };
            let overridden = HeaderIter::new(self.own, self.own_count).any(|(own, _)| own == name);
            if !overridden {
                return Some((name, value));
            }
        }
        None
    }
}

/// Appends one header in its wire form: a varint name length, the name, a varint value
/// length, the value.
pub fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    // The usual header (a short name and value) has one-byte lengths.
    if let (Ok(name_len @ 0..0x80), Ok(value_len @ 0..0x80)) =
        (u8::try_from(name.len()), u8::try_from(value.len()))
    {
        out.reserve(2 + name.len() + value.len());
        out.push(name_len);
        out.extend_from_slice(name.as_bytes());
        out.push(value_len);
        out.extend_from_slice(value);
        return;
    }
    varint::put_u64(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    varint::put_u64(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// How many bytes [`put_header`] writes.
pub fn header_len(name: &str, value: &[u8]) -> usize {
    varint::len_u64(name.len() as u64)
        + name.len()
        + varint::len_u64(value.len() as u64)
        + value.len()
}

/// Iterates over the records of a data batch's body, checking each one.
///
/// Yields an error (and then nothing) at the first malformed record: a length that runs past
/// the body, a varint that overflows, offset deltas that do not increase, or a header name that
/// is not UTF-8.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    reader: Reader<'a>,
    remaining: u32,
    last_delta: Option<u32>,
    failed: bool,
    shared: SharedHeaders<'a>,
    /// Whether sections of shared headers may start between records.
    sections: bool,
    /// Where the records start in the body (after the shared headers).
    base: usize,
    /// Malformed shared headers: the first (and only) item.
    unreadable: Option<DecodeError>,
}

impl<'a> RecordIter<'a> {
    /// Iterates over the records of data batch `header` in `body` (the batch bytes after the
    /// header).
    pub fn new(header: &BatchHeader, body: &'a [u8]) -> Self {
        let (shared, records, unreadable) = match split_body(header, body) {
            Ok((shared, records)) => (shared, records, None),
            Err(error) => (
                SharedHeaders::new(&body[..0], 0),
                &body[body.len()..],
                Some(error),
            ),
        };
        Self {
            reader: Reader::new(records),
            remaining: header.record_count,
            last_delta: None,
            failed: false,
            shared,
            sections: header.shared_headers,
            base: body.len() - records.len(),
            unreadable,
        }
    }

    /// Whether the body ends exactly after the last record.
    #[cfg(test)]
    pub(crate) fn at_end(&self) -> bool {
        self.reader.is_empty()
    }

    fn next_record(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        self.shared =
            next_section(&mut self.reader, self.sections, self.shared).map_err(section_error)?;
        let at = self.base + self.reader.position();
        let fault = |fault| DecodeError::BadRecord {
            position: at,
            reason: match fault {
                ReadFault::Truncated => "truncated",
                ReadFault::Overlong => "varint overflow",
            },
        };
        let len = self.reader.u64().map_err(fault)?;
        let len = usize::try_from(len).map_err(|_| fault(ReadFault::Truncated))?;
        let mut rec = Reader::new(self.reader.bytes(len).map_err(fault)?);
        let bad = |reason| DecodeError::BadRecord {
            position: at,
            reason,
        };
        let _attributes = rec.u8().map_err(fault)?;
        let timestamp_delta = rec.i64().map_err(fault)?;
        let offset_delta = u32::try_from(rec.u64().map_err(fault)?)
            .map_err(|_| bad("offset delta over 32 bits"))?;
        if self.last_delta.is_some_and(|last| offset_delta <= last) {
            return Err(bad("offset deltas do not increase"));
        }
        self.last_delta = Some(offset_delta);
        let key = read_nullable(&mut rec).map_err(fault)?;
        let value = read_nullable(&mut rec).map_err(fault)?;
        let header_count = rec.u64().map_err(fault)?;
        let headers_start = rec.position();
        let mut check = rec.clone();
        for _ in 0..header_count {
            match check_header(&mut check) {
                Ok(()) => {}
                Err(HeaderFault::Read(f)) => return Err(fault(f)),
                Err(HeaderFault::NotUtf8) => return Err(bad("header name is not UTF-8")),
            }
        }
        if !check.is_empty() {
            return Err(bad("bytes after the last header"));
        }
        let headers = rec.bytes(check.position() - headers_start).map_err(fault)?;
        Ok(RecordRef {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers,
            header_count,
            shared: self.shared,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.unreadable.take() {
            self.failed = true;
            return Some(Err(error));
        }
        if self.remaining == 0 || self.failed {
            return None;
        }
        self.remaining -= 1;
        let item = self.next_record();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Checks the records of data batch `header` in `body` as [`RecordIter`] does (and that the
/// body ends after the last one) without building them: `Some` with the last offset delta (0
/// for none) and the largest timestamp (the first timestamp plus each delta, wrapping) if all
/// are well formed, `None` if [`RecordIter`] would report an error or bytes follow the last
/// record.
pub(crate) fn scan(header: &BatchHeader, body: &[u8]) -> Option<(u32, i64)> {
    let first_timestamp = header.first_timestamp;
    let mut last_delta = 0;
    let mut max_timestamp = i64::MIN;
    let whole = walk(header, body, |record| {
        last_delta = record.offset_delta;
        max_timestamp = max_timestamp.max(first_timestamp.wrapping_add(record.timestamp_delta));
    });
    whole.then_some((last_delta, max_timestamp))
}

/// Hands the records of data batch `header` in `body` (the batch bytes after the header) to
/// `each`, in order, checking each (and the shared headers) as [`RecordIter`] does; `true` if
/// all are well formed and the body ends after the last one.
///
/// The quick pass over a batch: it builds no error. On `false`, some records may have been
/// handed out already; [`fault`] names what is wrong.
pub fn walk<'a>(header: &BatchHeader, body: &'a [u8], mut each: impl FnMut(RecordRef<'a>)) -> bool {
    let Ok((mut shared, records)) = split_body(header, body) else {
        return false;
    };
    let mut reader = Reader::new(records);
    let mut last_delta: Option<u32> = None;
    for _ in 0..header.record_count {
        let Ok(section) = next_section(&mut reader, header.shared_headers, shared) else {
            return false;
        };
        shared = section;
        let Some(record) = walk_one(&mut reader, last_delta, shared) else {
            return false;
        };
        last_delta = Some(record.offset_delta);
        each(record);
    }
    reader.is_empty()
}

/// What is wrong with the records of data batch `header` in `body`, for a body that [`walk`]
/// refused: its shared headers or the first record [`RecordIter`] finds malformed, or else
/// bytes after the last record.
pub fn fault(header: &BatchHeader, body: &[u8]) -> DecodeError {
    RecordIter::new(header, body)
        .find_map(Result::err)
        .unwrap_or(DecodeError::HeaderMismatch("bytes after the last record"))
}

/// One record of [`walk`], or `None` if it is malformed or its offset delta does not follow
/// `last_delta`.
#[expect(
    clippy::inline_always,
    reason = "called once per record or header; see varint.rs"
)]
#[inline(always)]
fn walk_one<'a>(
    reader: &mut Reader<'a>,
    last_delta: Option<u32>,
    shared: SharedHeaders<'a>,
) -> Option<RecordRef<'a>> {
    let len = usize::try_from(reader.u64().ok()?).ok()?;
    let mut rec = Reader::new(reader.bytes(len).ok()?);
    rec.u8().ok()?;
    let timestamp_delta = rec.i64().ok()?;
    let offset_delta = u32::try_from(rec.u64().ok()?).ok()?;
    if last_delta.is_some_and(|last| offset_delta <= last) {
        return None;
    }
    let key = read_nullable(&mut rec).ok()?;
    let value = read_nullable(&mut rec).ok()?;
    let header_count = rec.u64().ok()?;
    let headers = rec.rest();
    // Each header takes at least two bytes, so this ends with the record's bytes.
    for _ in 0..header_count {
        check_header(&mut rec).ok()?;
    }
    if !rec.is_empty() {
        return None;
    }
    Some(RecordRef {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
        header_count,
        shared,
    })
}

/// Appends one record in its wire form.
pub(crate) fn encode_record(out: &mut Vec<u8>, record: &Record, first_timestamp: i64) {
    let timestamp_delta = record.timestamp.wrapping_sub(first_timestamp);
    let len = body_len(record, timestamp_delta);
    varint::put_u64(out, len as u64);
    out.push(0);
    varint::put_i64(out, timestamp_delta);
    varint::put_u64(out, u64::from(record.offset_delta));
    put_nullable(out, record.key.as_deref());
    put_nullable(out, record.value.as_deref());
    varint::put_u64(out, record.headers.len() as u64);
    for header in &record.headers {
        put_header(out, &header.key, &header.value);
    }
}

/// Size of one encoded record, its length prefix included.
pub(crate) fn encoded_len(record: &Record, first_timestamp: i64) -> usize {
    let len = body_len(record, record.timestamp.wrapping_sub(first_timestamp));
    varint::len_u64(len as u64) + len
}

fn body_len(record: &Record, timestamp_delta: i64) -> usize {
    let nullable = |v: Option<&[u8]>| match v {
        None => varint::len_i64(-1),
        Some(b) => varint::len_i64(signed_len(b.len())) + b.len(),
    };
    let headers: usize = record
        .headers
        .iter()
        .map(|h| header_len(&h.key, &h.value))
        .sum();
    1 + varint::len_i64(timestamp_delta)
        + varint::len_u64(u64::from(record.offset_delta))
        + nullable(record.key.as_deref())
        + nullable(record.value.as_deref())
        + varint::len_u64(record.headers.len() as u64)
        + headers
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

/// A length as the signed varint that nullable fields use (lengths never reach `i64::MAX`).
fn signed_len(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

#[expect(
    clippy::inline_always,
    reason = "called once per record or header; see varint.rs"
)]
#[inline(always)]
fn read_nullable<'a>(reader: &mut Reader<'a>) -> Result<Option<&'a [u8]>, ReadFault> {
    match reader.i64()? {
        -1 => Ok(None),
        len => {
            let len = usize::try_from(len).map_err(|_| ReadFault::Truncated)?;
            reader.bytes(len).map(Some)
        }
    }
}

#[derive(Clone, Copy)]
enum HeaderFault {
    Read(ReadFault),
    NotUtf8,
}

impl From<ReadFault> for HeaderFault {
    fn from(fault: ReadFault) -> Self {
        Self::Read(fault)
    }
}

/// Reads past one header, checking it as [`read_header`] does.
#[expect(
    clippy::inline_always,
    reason = "called once per record or header; see varint.rs"
)]
#[inline(always)]
fn check_header(reader: &mut Reader<'_>) -> Result<(), HeaderFault> {
    let key_len = usize::try_from(reader.u64()?).map_err(|_| ReadFault::Truncated)?;
    let key = reader.bytes(key_len)?;
    // Header names are nearly always ASCII, which is quicker to check.
    if !key.is_ascii() && std::str::from_utf8(key).is_err() {
        return Err(HeaderFault::NotUtf8);
    }
    let value_len = usize::try_from(reader.u64()?).map_err(|_| ReadFault::Truncated)?;
    reader.bytes(value_len)?;
    Ok(())
}

fn read_header<'a>(reader: &mut Reader<'a>) -> Result<(&'a str, &'a [u8]), HeaderFault> {
    let key_len = usize::try_from(reader.u64()?).map_err(|_| ReadFault::Truncated)?;
    let key = std::str::from_utf8(reader.bytes(key_len)?).map_err(|_| HeaderFault::NotUtf8)?;
    let value_len = usize::try_from(reader.u64()?).map_err(|_| ReadFault::Truncated)?;
    let value = reader.bytes(value_len)?;
    Ok((key, value))
}
