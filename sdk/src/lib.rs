//! The Sidestream SDK: what a service links to exchange typed events over topics, through the
//! sidecar on its own node.
//!
//! An event is a prost message that implements [`Event`], almost always through
//! `#[derive(Event)]`: the derive names the event's topic, its key field and a versioned type
//! name, and checks all three at compile time. The key decides the partition, so its bytes
//! ([`EventKey`]) are defined exactly (see [Keys](Event#keys)), and so is the hash that maps
//! them to a partition ([`partitioner`]: Kafka's murmur2). Every published event also carries
//! the [`headers`] named there.
//!
//! Central types:
//!
//! - [`Client`]: one QUIC connection (mutual TLS, ALPN `sidestream/1`) to the sidecar, built
//!   by [`Client::connect_local`] or [`Client::builder`]; it publishes, subscribes and
//!   administers topics, and is cheap to clone into every task;
//! - [`Receipt`] / [`PendingReceipt`]: where a published event went, once the sidecar
//!   acknowledged it ([`Acks`]);
//! - [`Subscription`] of [`Delivery`]s: the events of a topic, decoded and type-checked, with
//!   acknowledgements that a consumer group commits;
//! - [`Error`]: every failure, naming what was wrong;
//! - [`Event`], [`EventKey`], [`headers`]: what an event is.
//!
//! ```no_run
//! use sidestream::{Client, Event, StartAt};
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
//! # async fn example() -> Result<(), sidestream::Error> {
//! // The sidecar on this node ($SIDESTREAM_SIDECAR or 127.0.0.1:7400), dev certificates.
//! let client = Client::connect_local("order-service").await?;
//!
//! let order = OrderPlaced { order_id: "o-17".into(), amount_cents: 1250 };
//! let receipt = client.publish(&order).await?; // after the replica set committed it
//! println!("stored at {}/{:?}", receipt.partition, receipt.offset);
//!
//! let mut payments = client
//!     .subscribe::<OrderPlaced>()
//!     .group("payments")
//!     .from(StartAt::Earliest)
//!     .start()
//!     .await?;
//! while let Some(delivery) = payments.next().await {
//!     let delivery = delivery?;
//!     println!("charge {} cents for {}", delivery.event.amount_cents, delivery.event.order_id);
//!     delivery.ack().await?; // committed in the background
//! }
//! payments.close().await?;
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Publishing is batched per partition and pipelined: [`Client::publish_nowait`] returns once
//! the event is buffered, and the client's background task sends batches as they fill or as
//! soon as their partition has nothing in flight, as an idempotent producer (retries never
//! duplicate or reorder events within a partition). The [`transport`] module holds the QUIC
//! and mutual-TLS client side, and finds the sidecar's development certificates.
//!
//! The SDK does not store or replicate anything itself, nor does it pick partition leaders:
//! it talks to the sidecar on its own node, which does.
//!
//! One feature, on by default: `otel`, OpenTelemetry in [`telemetry`] (spans exported over
//! OTLP, and the current span's context in each event's `traceparent`). A service that does
//! not export spans can turn default features off and build without the OpenTelemetry and
//! gRPC crates; its events then carry a fresh random trace per publish call.
#![warn(missing_docs)]

mod client;
mod error;
mod event;
pub mod partitioner;
mod publish;
mod random;
mod subscribe;
pub mod telemetry;
pub mod transport;

pub use client::{
    Cleanup, Client, ClientBuilder, DEFAULT_SIDECAR, Fsync, MAX_BATCH_BYTES, ParseSettingError,
    SIDECAR_ENV, TopicSettings,
};
pub use error::{Error, TransportError};
pub use event::{Event, EventKey, Headers, ParseTraceParentError, TraceParent, headers};
pub use publish::{Acks, ParseAcksError, PendingReceipt, PendingReceipts, RawEvent, Receipt};
pub use sidestream_derive::Event;
pub use subscribe::{
    AckHandle, Delivery, PartitionState, Payload, StartAt, SubscribeBuilder, Subscription,
};

/// The prost version the SDK is built on; [`Event`] requires [`prost::Message`].
pub use prost;

/// The UUID type of event ids ([`Headers::id`]).
pub use uuid::Uuid;

/// The wire protocol's crate: the message types some administration calls return
/// ([`proto::v1::TopicDescription`], …) and [`proto::ErrorCode`].
pub use sidestream_proto as proto;

/// What `#[derive(Event)]` expands to refers to; not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::KeyField;
}
