//! Names of the headers the SDK sets on every event it publishes, in the spirit of
//! [CloudEvents](https://github.com/cloudevents/spec/blob/main/cloudevents/spec.md) (whose
//! attributes of the same names they mirror).
//!
//! Header values are text. The SDK owns these names: the publisher sets all of them but
//! [`TRACEPARENT`] on every event (that one when a trace is active), and a subscriber reads
//! [`TYPE`] to tell an event of its type from another type on the same topic, reporting the
//! latter rather than decoding it.
//!
//! ```
//! use sidestream::headers;
//!
//! assert_eq!(headers::TYPE, "type");
//! assert!(headers::ALL.contains(&headers::TRACEPARENT));
//! ```

/// The event's unique id: a UUID version 7 in its hyphenated lowercase text form, e.g.
/// `0190b6a2-7c1e-7d3a-9f2b-4c5d6e7f8a9b`. Time-ordered, so ids of one publisher sort
/// roughly by publish time; consumers may use it to recognise an event they have seen.
pub const ID: &str = "id";

/// The event's versioned type name, [`Event::TYPE_NAME`](crate::Event::TYPE_NAME), e.g.
/// `shop.OrderPlaced.v1`.
pub const TYPE: &str = "type";

/// The name of the publishing service, as it named itself when connecting, e.g.
/// `order-service`.
pub const SOURCE: &str = "source";

/// When the event was published: an RFC 3339 timestamp in UTC, e.g.
/// `2025-06-01T12:00:00.123Z`.
pub const TIME: &str = "time";

/// The W3C Trace Context `traceparent` of the publishing span, e.g.
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`, which links the publish span to
/// the consumer's handling span. Absent when the publisher had no active trace.
pub const TRACEPARENT: &str = "traceparent";

/// Every header name the SDK sets, in the order above.
pub const ALL: [&str; 5] = [ID, TYPE, SOURCE, TIME, TRACEPARENT];
