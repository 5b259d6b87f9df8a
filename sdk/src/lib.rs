//! The Sidestream SDK.
//!
//! This crate will be what a service links: a `Client` that connects over QUIC (mutual TLS,
//! ALPN `sidestream/1`) to the sidecar on its own node, a batching `Publisher`, typed
//! `Subscription`s delivering `Delivery<E>`, and the `Event` trait that `#[derive(Event)]`
//! (crate `sidestream-derive`) implements on prost messages.
//!
//! It does not store or replicate anything itself; the sidecar does. The client arrives with
//! the single-sidecar issue; until then this crate is intentionally empty.
#![warn(missing_docs)]
