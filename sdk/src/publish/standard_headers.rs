//! The headers the SDK writes on every event: `id`, `type`, `source` and `traceparent`, the
//! first and last in their binary forms (see [`headers`]). Built on the stack:
//! no allocation per event.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{TraceParent, headers, random};

/// The per-event header values: a UUID v7 id and a W3C trace context, in their binary forms,
/// and the publish time that is the record's timestamp.
#[derive(Clone, Copy)]
pub(crate) struct StandardHeaders {
    /// Milliseconds since the Unix epoch: the record's timestamp, which is the event's time.
    pub(crate) timestamp_ms: i64,
    id: [u8; 16],
    traceparent: [u8; TraceParent::WIRE_LEN],
}

impl StandardHeaders {
    /// Fresh values for an event published now, in trace `trace` (the publishing span's), else
    /// in a fresh random one.
    pub(crate) fn now(trace: Option<TraceParent>) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        let mut standard = Self::at(i64::try_from(millis).unwrap_or(i64::MAX));
        if let Some(trace) = trace {
            standard.traceparent = trace.to_wire();
        }
        standard
    }

    /// Fresh values (new random id and trace) for an event published at `timestamp_ms`.
    pub(crate) fn at(timestamp_ms: i64) -> Self {
        // One draw for the id's random bits (10), the trace id (16) and the span id (8).
        let mut random = [0u8; 34];
        random::fill(&mut random);
        let (random_bits, rest) = random.split_at(10);
        let (trace_id, span_id) = rest.split_at(16);
        let millis = u64::try_from(timestamp_ms).unwrap_or(0);
        let id = uuid::Builder::from_unix_timestamp_millis(
            millis,
            random_bits.try_into().unwrap_or(&[0; 10]),
        )
        .into_uuid();

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

        Self {
            timestamp_ms,
            id: id.into_bytes(),
            traceparent: trace.to_wire(),
        }
    }

    /// The four headers in their fixed order: id, type, source, traceparent.
    pub(crate) fn pairs<'a>(&'a self, type_name: &'a str, source: &'a str) -> [Header<'a>; 4] {
        [
            (headers::ID, &self.id),
            (headers::TYPE, type_name.as_bytes()),
            (headers::SOURCE, source.as_bytes()),
            (headers::TRACEPARENT, &self.traceparent),
        ]
    }

    /// The headers without `type` (for raw events, which bring their own or none), in order.
    pub(crate) fn untyped_pairs<'a>(&'a self, source: &'a str) -> [Header<'a>; 3] {
        [
            (headers::ID, &self.id),
            (headers::SOURCE, source.as_bytes()),
            (headers::TRACEPARENT, &self.traceparent),
        ]
    }
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
        assert_ne!(a.id, b.id);
        assert_ne!(a.traceparent, b.traceparent);
    }
}
