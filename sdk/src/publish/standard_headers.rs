//! The headers the SDK writes on every event: `id`, `type`, `source` and `traceparent`, the
//! first and last in their binary forms (see [`headers`]). Built on the stack:
//! no allocation per event.

use std::time::{SystemTime, UNIX_EPOCH};

use sidestream_log::batch::{header_len, put_header};

use crate::{TraceParent, headers, random};

/// The per-event header values: a UUID v7 id and a W3C trace context, kept as their whole
/// headers in wire form (name and value, as `put_header` writes them), and the publish time
/// that is the record's timestamp.
#[derive(Clone, Copy)]
pub(crate) struct StandardHeaders {
    /// Milliseconds since the Unix epoch: the record's timestamp, which is the event's time.
    pub(crate) timestamp_ms: i64,
    id_wire: [u8; ID_WIRE_LEN],
    traceparent_wire: [u8; TRACEPARENT_WIRE_LEN],
}

/// The `id` header's wire form: name length, name, value length, then the 16-byte UUID.
const ID_WIRE_LEN: usize = 1 + headers::ID.len() + 1 + 16;
/// Where the id's bytes start in [`ID_WIRE_LEN`]'s form.
const ID_AT: usize = ID_WIRE_LEN - 16;
/// The `traceparent` header's wire form: name length, name, value length, then the value.
const TRACEPARENT_WIRE_LEN: usize = 1 + headers::TRACEPARENT.len() + 1 + TraceParent::WIRE_LEN;
/// Where the trace context's bytes start in its header's wire form.
const TRACEPARENT_AT: usize = TRACEPARENT_WIRE_LEN - TraceParent::WIRE_LEN;

impl StandardHeaders {
    /// Fresh values for an event published now, in trace `trace` (the publishing span's), else
    /// in a fresh random one.
    pub(crate) fn now(trace: Option<TraceParent>) -> Self {
        Self::at_in(now_ms(), trace)
    }

    /// Fresh values for an event published at `timestamp_ms`, in trace `trace` (else in a
    /// fresh random one).
    pub(crate) fn at_in(timestamp_ms: i64, trace: Option<TraceParent>) -> Self {
        // Only the randomness needed: the id's 74 random bits, and a trace only when none is
        // given (a batch publish shares its call's).
        let mut random_bits = [0u8; 10];
        random::fill(&mut random_bits);
        let millis = u64::try_from(timestamp_ms).unwrap_or(0);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random_bits).into_uuid();
        let trace = trace.unwrap_or_else(random_trace);

        let mut id_wire = ID_WIRE_PREFIX;
        id_wire[ID_AT..].copy_from_slice(id.as_bytes());
        let mut traceparent_wire = TRACEPARENT_WIRE_PREFIX;
        traceparent_wire[TRACEPARENT_AT..].copy_from_slice(&trace.to_wire());
        Self {
            timestamp_ms,
            id_wire,
            traceparent_wire,
        }
    }

    /// Fresh values (new random id and trace) for an event published at `timestamp_ms`.
    pub(crate) fn at(timestamp_ms: i64) -> Self {
        Self::at_in(timestamp_ms, None)
    }

    fn id(&self) -> &[u8] {
        &self.id_wire[ID_AT..]
    }

    fn traceparent(&self) -> &[u8] {
        &self.traceparent_wire[TRACEPARENT_AT..]
    }

    /// The four headers in their fixed order: id, type, source, traceparent.
    #[cfg(test)]
    pub(crate) fn pairs<'a>(&'a self, type_name: &'a str, source: &'a str) -> [Header<'a>; 4] {
        [
            (headers::ID, self.id()),
            (headers::TYPE, type_name.as_bytes()),
            (headers::SOURCE, source.as_bytes()),
            (headers::TRACEPARENT, self.traceparent()),
        ]
    }

    /// The headers without `type` (for raw events, which bring their own or none), in order.
    pub(crate) fn untyped_pairs<'a>(&'a self, source: &'a str) -> [Header<'a>; 3] {
        [
            (headers::ID, self.id()),
            (headers::SOURCE, source.as_bytes()),
            (headers::TRACEPARENT, self.traceparent()),
        ]
    }

    /// The four headers in wire form, in pieces: `type_prefix` is
    /// [`TypePrefix::new`]`(type_name)`, `source_header` the `source` header already encoded
    /// ([`encode_header`]).
    pub(crate) fn wire<'a>(
        &'a self,
        type_prefix: &'a TypePrefix,
        type_name: &'a str,
        source_header: &'a [u8],
    ) -> [&'a [u8]; 5] {
        [
            &self.id_wire,
            type_prefix.bytes(),
            type_name.as_bytes(),
            source_header,
            &self.traceparent_wire,
        ]
    }

    /// The headers without `type` in wire form, in pieces (see [`wire`](Self::wire)).
    pub(crate) fn untyped_wire<'a>(&'a self, source_header: &'a [u8]) -> [&'a [u8]; 3] {
        [&self.id_wire, source_header, &self.traceparent_wire]
    }
}

/// A fresh random trace context (sampled), for a publish call made outside any span.
pub(crate) fn random_trace() -> TraceParent {
    let mut ids = [0u8; 24];
    random::fill(&mut ids);
    let (trace_id, span_id) = ids.split_at(16);
    let mut trace = TraceParent {
        trace_id: trace_id.try_into().unwrap_or([0; 16]),
        span_id: span_id.try_into().unwrap_or([0; 8]),
        flags: 1,
    };
    // All-zero ids are invalid in W3C Trace Context; the odds are nil, but be exact.
    while trace.trace_id == [0; 16] {
        random::fill(&mut trace.trace_id);
    }
    while trace.span_id == [0; 8] {
        random::fill(&mut trace.span_id);
    }
    trace
}

/// Milliseconds since the Unix epoch, now: an event's timestamp.
pub(crate) fn now_ms() -> i64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            // Whole seconds and the millisecond: no 128-bit arithmetic per event.
            elapsed
                .as_secs()
                .saturating_mul(1000)
                .saturating_add(u64::from(elapsed.subsec_millis()))
        });
    i64::try_from(millis).unwrap_or(i64::MAX)
}

/// The `type` header's wire form up to its value: name length, name, value length.
pub(crate) struct TypePrefix {
    bytes: [u8; 1 + headers::TYPE.len() + 10],
    len: usize,
}

impl TypePrefix {
    /// The prefix of a `type` header holding `type_name` (built on the stack, per event).
    pub(crate) fn new(type_name: &str) -> Self {
        const NAME: &[u8] = headers::TYPE.as_bytes();
        let mut bytes = [0u8; 1 + NAME.len() + 10];
        bytes[0] = u8::try_from(NAME.len()).unwrap_or(0);
        bytes[1..=NAME.len()].copy_from_slice(NAME);
        let mut at = 1 + NAME.len();
        // The value's length as a LEB128 varint (as `put_header` writes it).
        let mut len = type_name.len() as u64;
        while len >= 0x80 {
            bytes[at] = u8::try_from(len & 0x7f).unwrap_or(0) | 0x80;
            len >>= 7;
            at += 1;
        }
        bytes[at] = u8::try_from(len).unwrap_or(0);
        Self { bytes, len: at + 1 }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// One header in its wire form, as a batch holds it.
pub(crate) fn encode_header(name: &str, value: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(header_len(name, value));
    put_header(&mut wire, name, value);
    wire
}

const ID_WIRE_PREFIX: [u8; ID_WIRE_LEN] = wire_prefix(headers::ID, 16);
const TRACEPARENT_WIRE_PREFIX: [u8; TRACEPARENT_WIRE_LEN] =
    wire_prefix(headers::TRACEPARENT, TraceParent::WIRE_LEN);

/// A header's wire form with a zeroed value of `value_len` bytes (name and value under 128
/// bytes, so that both lengths take one byte).
const fn wire_prefix<const N: usize>(name: &str, value_len: usize) -> [u8; N] {
    assert!(name.len() < 128 && value_len < 128 && N == 2 + name.len() + value_len);
    let mut out = [0u8; N];
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked above to be under 128"
    )]
    {
        out[0] = name.len() as u8;
        out[1 + name.len()] = value_len as u8;
    }
    let name = name.as_bytes();
    let mut i = 0;
    while i < name.len() {
        out[1 + i] = name[i];
        i += 1;
    }
    out
}

/// One header as the batch builder takes it.
pub(crate) type Header<'a> = (&'a str, &'a [u8]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_come_in_order_with_valid_values() {
        let standard = StandardHeaders::at(1_795_574_818_123);
        let pairs = standard.pairs("shop.OrderPlaced.v1", "order-service");
        let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, headers::ALL);

        let id = uuid::Uuid::from_slice(pairs[0].1).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs * 1000 + u64::from(nanos) / 1_000_000,
            1_795_574_818_123
        );
        assert_eq!(pairs[1].1, b"shop.OrderPlaced.v1");
        assert_eq!(pairs[2].1, b"order-service");

        let trace = TraceParent::from_header(pairs[3].1).unwrap();
        assert!(trace.is_sampled());
        assert_eq!(trace.to_string().len(), TraceParent::TEXT_LEN);

        let untyped = standard.untyped_pairs("cli");
        assert_eq!(
            untyped.map(|(name, _)| name),
            [headers::ID, headers::SOURCE, headers::TRACEPARENT]
        );
    }

    #[test]
    fn ids_and_traces_differ_between_events() {
        let a = StandardHeaders::at(1);
        let b = StandardHeaders::at(1);
        assert_ne!(a.id(), b.id());
        assert_ne!(a.traceparent(), b.traceparent());
    }

    #[test]
    fn the_wire_pieces_are_the_pairs_encoded() {
        let encoded = |pairs: &[Header<'_>]| {
            let mut out = Vec::new();
            for (name, value) in pairs {
                put_header(&mut out, name, value);
            }
            out
        };
        let standard = StandardHeaders::now(Some(TraceParent {
            trace_id: [3; 16],
            span_id: [4; 8],
            flags: 1,
        }));
        // Type names whose length takes one, two and three varint bytes.
        for type_name in ["shop.OrderPlaced.v1", &"t".repeat(200), &"u".repeat(20_000)] {
            let source = "order-service";
            let source_header = encode_header(headers::SOURCE, source.as_bytes());
            let prefix = TypePrefix::new(type_name);
            let wire = standard.wire(&prefix, type_name, &source_header).concat();
            assert_eq!(wire, encoded(&standard.pairs(type_name, source)));
            let untyped = standard.untyped_wire(&source_header).concat();
            assert_eq!(untyped, encoded(&standard.untyped_pairs(source)));
        }
        let trace = TraceParent::from_header(standard.traceparent()).unwrap();
        assert_eq!((trace.trace_id, trace.span_id), ([3; 16], [4; 8]));
    }
}
