//! Typed events: the [`Event`] trait, its partitioning [`EventKey`] and the names of the
//! [`headers`] every event carries.

pub mod headers;
mod key;
mod record_headers;
mod rfc3339;
mod trace_parent;

pub use key::{EventKey, KeyField};
pub use record_headers::Headers;
pub use trace_parent::{ParseTraceParentError, TraceParent};

/// A typed event: a prost message that knows its topic, its versioned type name and its key.
///
/// Derive it rather than writing it by hand; `#[derive(Event)]` checks the topic name, the
/// type name and the key field at compile time:
///
/// ```
/// use sidestream::Event;
///
/// #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
/// #[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
/// pub struct OrderPlaced {
///     #[prost(uint64, tag = "1")]
///     pub order_id: u64,
///     #[prost(string, tag = "2")]
///     pub customer: String,
/// }
///
/// let order = OrderPlaced { order_id: 42, customer: "ada".into() };
/// assert_eq!(OrderPlaced::TOPIC, "orders");
/// assert_eq!(OrderPlaced::TYPE_NAME, "shop.OrderPlaced.v1");
/// assert_eq!(order.key().unwrap().as_bytes(), b"42");
/// ```
///
/// # Keys
///
/// Events with the same key go to the same partition, so the key bytes are part of the wire
/// contract: the `sidestream` CLI and every SDK version hash the same bytes for the same key.
/// The key field's type decides them:
///
/// | proto field | Rust type | key bytes |
/// | --- | --- | --- |
/// | `string` | `String` | its UTF-8 bytes |
/// | `bytes` | `Vec<u8>` or `bytes::Bytes` | the bytes themselves |
/// | `uint32`, `fixed32` | `u32` | the decimal text of the number |
/// | `uint64`, `fixed64` | `u64` | the decimal text of the number |
/// | `int32`, `sint32`, `sfixed32` | `i32` | the decimal text of the number, `-` for negatives |
/// | `int64`, `sint64`, `sfixed64` | `i64` | the decimal text of the number, `-` for negatives |
/// | `optional` any of the above | `Option<_>` | as above when present; no key when absent |
///
/// So `order_id: 42` has the key `b"42"`, the same as `sidestream produce orders --key 42`,
/// and `order_id: -7` has `b"-7"`. Integers are never keyed by their varint or
/// little-endian encoding. A present but empty `string` or `bytes` field is the empty key
/// (`Some`, zero bytes), not "no key". An event without a key field, or whose `optional` key
/// field is absent, has no key: the publisher spreads such events over the partitions
/// (sticky round-robin).
///
/// # To ensure correctness
///
/// An implementation (derived or written by hand) must guarantee:
///
/// - [`TOPIC`](Event::TOPIC) is a valid topic name: 1 to 249 characters of ASCII letters,
///   digits, `.`, `_` and `-`, and not `.` or `..`.
/// - [`TYPE_NAME`](Event::TYPE_NAME) names this message schema and its version, ends in a
///   version segment `.v<N>`, and changes (to `.v<N+1>`) whenever a change to the message
///   would make old readers mis-decode it. Two different types on one topic never share a
///   type name: subscribers rely on it to report events of another type instead of
///   decoding them as this one.
/// - [`key`](Event::key) is a pure function of the key field, follows the table above, and
///   returns the same bytes after a prost encode/decode round trip.
pub trait Event: prost::Message + Default + Clone + Send + Sync + 'static {
    /// Topic the event is published to.
    const TOPIC: &'static str;

    /// Versioned type name, e.g. `"shop.OrderPlaced.v1"`; carried in the
    /// [`type`](headers::TYPE) header.
    const TYPE_NAME: &'static str;

    /// The partitioning key: `None` for an unkeyed event (or an absent optional key).
    ///
    /// See [Keys](Event#keys) for the bytes of each field type.
    fn key(&self) -> Option<EventKey<'_>>;
}
