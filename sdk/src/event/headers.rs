//! Names of the headers the SDK sets on every event it publishes, in the spirit of
//! [CloudEvents](https://github.com/cloudevents/spec/blob/main/cloudevents/spec.md) (whose
//! attributes of the same names they mirror).
//!
//! The SDK owns these names. The publisher writes [`ID`], [`TYPE`] (typed events),
//! [`SOURCE`] and [`TRACEPARENT`] on every event, in that order; the event's [`TIME`] is the
//! record's timestamp, which every record has, so it takes no header of its own. A subscriber
//! reads [`TYPE`] to tell an event of its type from another type on the same topic, reporting
//! the latter rather than decoding it, and reads them all through
//! [`Headers`](crate::Headers)' accessors.
//!
//! Values that are ids travel in binary, the rest as UTF-8 text:
//!
//! | header | value on the wire | read with |
//! | --- | --- | --- |
//! | `id` | 16 bytes: the UUID v7 | [`Headers::id`](crate::Headers::id) |
//! | `type` | text, e.g. `shop.OrderPlaced.v1` | [`Headers::type_name`](crate::Headers::type_name) |
//! | `source` | text, e.g. `order-service` | [`Headers::source`](crate::Headers::source) |
//! | `traceparent` | 26 bytes: version 0, trace id (16), span id (8), flags (1) | [`Headers::traceparent`](crate::Headers::traceparent) |
//! | (`time`) | none: the record timestamp, ms since the Unix epoch | [`Headers::time`](crate::Headers::time) |
//!
//! The accessors also read the text forms (a hyphenated UUID, a W3C `traceparent` string, an
//! RFC 3339 `time` header) that events from other tools may carry.
//!
//! ```
//! use sidestream::headers;
//!
//! assert_eq!(headers::TYPE, "type");
//! assert!(headers::ALL.contains(&headers::TRACEPARENT));
//! ```

/// The event's unique id: a UUID version 7, its 16 bytes on the wire. Time-ordered, so ids of
/// one publisher sort roughly by publish time; consumers may use it to recognise an event they
/// have seen.
pub const ID: &str = "id";

/// The event's versioned type name, [`Event::TYPE_NAME`](crate::Event::TYPE_NAME), e.g.
/// `shop.OrderPlaced.v1`.
pub const TYPE: &str = "type";

/// The name of the publishing service, as it named itself when connecting, e.g.
/// `order-service`.
pub const SOURCE: &str = "source";

/// When the event was published. The SDK does not write it as a header: the record's
/// timestamp holds it, and [`Headers::time`](crate::Headers::time) shows it as RFC 3339 text in
/// UTC, e.g. `2025-06-01T12:00:00.123Z`. A `time` header that a raw event brings is kept and
/// read instead.
pub const TIME: &str = "time";

/// The W3C Trace Context of the publishing span, a [`TraceParent`](crate::TraceParent) in its
/// 26-byte binary form, which links the publish span to the consumer's handling span.
pub const TRACEPARENT: &str = "traceparent";

/// Every header name the SDK writes, in the order it writes them.
pub const ALL: [&str; 4] = [ID, TYPE, SOURCE, TRACEPARENT];
