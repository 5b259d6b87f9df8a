//! Records inside a data batch: encoding, and a zero-copy iterator over untrusted bytes.

use bytes::Bytes;

use crate::batch::DecodeError;
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
}

impl<'a> RecordRef<'a> {
    /// The record's headers, already checked to be well formed.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter::new(self.headers, self.header_count)
    }

    /// The record's headers in their wire form (each a varint name length, the UTF-8 name, a
    /// varint value length and the value), for keeping them without parsing them now; read
    /// them back with [`HeaderIter::new`] and [`header_count`](Self::header_count).
    pub fn header_wire(&self) -> &'a [u8] {
        self.headers
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> u64 {
        self.header_count
    }
}

/// The headers of one record, read from their wire form.
///
/// Ends at the first header that is not well formed (headers that came through
/// [`RecordIter`] or were written by [`put_header`] always are).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    remaining: u64,
}

impl<'a> HeaderIter<'a> {
    /// Iterates over the first `count` headers in `wire`.
    pub fn new(wire: &'a [u8], count: u64) -> Self {
        Self {
            reader: Reader::new(wire),
            remaining: count,
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let header = read_header(&mut self.reader).ok();
        if header.is_none() {
            self.remaining = 0;
        }
        header
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
}

impl<'a> RecordIter<'a> {
    /// Iterates over `count` records in `body` (the batch bytes after the header).
    pub fn new(body: &'a [u8], count: u32) -> Self {
        Self {
            reader: Reader::new(body),
            remaining: count,
            last_delta: None,
            failed: false,
        }
    }

    /// Whether the body ends exactly after the last record.
    #[cfg(test)]
    pub(crate) fn at_end(&self) -> bool {
        self.reader.is_empty()
    }

    fn next_record(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let at = self.reader.position();
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
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        self.remaining -= 1;
        let item = self.next_record();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Checks `count` records in `body` as [`RecordIter`] does (and that the body ends after the
/// last one) without building them: `Some` with the last offset delta (0 for none) and the
/// largest timestamp (`first_timestamp` plus each delta, wrapping) if all are well formed,
/// `None` if [`RecordIter`] would report an error or bytes follow the last record.
pub(crate) fn scan(body: &[u8], count: u32, first_timestamp: i64) -> Option<(u32, i64)> {
    let mut last_delta = 0;
    let mut max_timestamp = i64::MIN;
    let whole = walk(body, count, |record| {
        last_delta = record.offset_delta;
        max_timestamp = max_timestamp.max(first_timestamp.wrapping_add(record.timestamp_delta));
    });
    whole.then_some((last_delta, max_timestamp))
}

/// Hands the `count` records of `body` (the batch bytes after the header) to `each`, in
/// order, checking each as [`RecordIter`] does; `true` if all are well formed and the body
/// ends after the last one.
///
/// The quick pass over a batch: it builds no error. On `false`, some records may have been
/// handed out already; [`fault`] names what is wrong.
pub fn walk<'a>(body: &'a [u8], count: u32, mut each: impl FnMut(RecordRef<'a>)) -> bool {
    let mut reader = Reader::new(body);
    let mut last_delta: Option<u32> = None;
    for _ in 0..count {
        let Some(record) = walk_one(&mut reader, last_delta) else {
            return false;
        };
        last_delta = Some(record.offset_delta);
        each(record);
    }
    reader.is_empty()
}

/// What is wrong with the `count` records of `body`, for a body that [`walk`] refused: the
/// first record [`RecordIter`] finds malformed, or else bytes after the last record.
pub fn fault(body: &[u8], count: u32) -> DecodeError {
    RecordIter::new(body, count)
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
fn walk_one<'a>(reader: &mut Reader<'a>, last_delta: Option<u32>) -> Option<RecordRef<'a>> {
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
