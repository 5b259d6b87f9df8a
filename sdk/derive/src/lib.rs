//! `#[derive(Event)]` for Sidestream.
//!
//! This crate will provide the derive macro that turns a prost message into a Sidestream
//! event: it names the event's topic, its key field and a versioned type name
//! (`#[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]`), with
//! errors that point at the offending span. Generated code uses fully qualified paths.
//!
//! The macro arrives with the single-sidecar issue; until then this crate is intentionally
//! empty.
#![warn(missing_docs)]
