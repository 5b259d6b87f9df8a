//! The Sidestream SDK: what a service links to exchange typed events over topics.
//!
//! An event is a prost message that implements [`Event`], almost always through
//! `#[derive(Event)]`: the derive names the event's topic, its key field and a versioned type
//! name, and checks all three at compile time. The key decides the partition, so its bytes
//! ([`EventKey`]) are defined exactly (see [Keys](Event#keys)). Every published event also
//! carries the [`headers`] named here.
//!
//! Central types:
//!
//! - [`Event`]: the trait, and the derive macro of the same name;
//! - [`EventKey`]: the partitioning key bytes of one event;
//! - [`headers`]: the header names the SDK sets on every event.
//!
//! ```
//! use sidestream::Event;
//!
//! #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
//! #[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
//! pub struct OrderPlaced {
//!     #[prost(string, tag = "1")]
//!     pub order_id: String,
//!     #[prost(uint64, tag = "2")]
//!     pub amount_cents: u64,
//! }
//!
//! let order = OrderPlaced { order_id: "o-17".into(), amount_cents: 1250 };
//! assert_eq!(OrderPlaced::TOPIC, "orders");
//! assert_eq!(order.key().unwrap().as_bytes(), b"o-17");
//! ```
//!
//! The [`transport`] module holds the QUIC and mutual-TLS client side, and finds the sidecar's
//! development certificates.
//!
//! The SDK does not store or replicate anything itself, nor does it pick partition leaders:
//! it talks to the sidecar on its own node, which does. The `Client` (QUIC with mutual TLS,
//! ALPN `sidestream/1`), the batching `Publisher` and typed `Subscription`s arrive with the
//! single-sidecar issue.
#![warn(missing_docs)]

mod event;
pub mod transport;

pub use event::{Event, EventKey, headers};
pub use sidestream_derive::Event;

/// The prost version the SDK is built on; [`Event`] requires [`prost::Message`].
pub use prost;

/// What `#[derive(Event)]` expands to refers to; not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::KeyField;
}
