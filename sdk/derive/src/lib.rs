//! `#[derive(Event)]` for Sidestream: turns a prost message into a typed event.
//!
//! Use it through the SDK, which re-exports it as `sidestream::Event` next to the trait of
//! the same name. The derive reads one attribute, checks it at compile time and writes the
//! `impl sidestream::Event`; it generates no encoding (prost's derive does that) and no
//! runtime checks (there is nothing left to check at run time).
//!
//! Its parts: [`derive@Event`] (the entry point) reads `#[event(…)]` with `attr`, checks the
//! topic and type name with `name` and the key field with `key`, and `expand` writes the
//! impl, using only fully qualified paths.
//!
//! ```
//! use sidestream::Event;
//!
//! #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
//! #[event(topic = "payments", key = "payment_id", type_name = "pay.PaymentTaken.v2")]
//! pub struct PaymentTaken {
//!     #[prost(string, optional, tag = "1")]
//!     pub payment_id: Option<String>,
//! }
//!
//! assert_eq!(PaymentTaken::TOPIC, "payments");
//! assert!(PaymentTaken::default().key().is_none(), "absent optional key: no key");
//! ```
#![warn(missing_docs)]

mod attr;
mod expand;
mod key;
mod name;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `sidestream::Event` for a prost message (a struct with named fields).
///
/// ```
/// #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
/// #[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
/// pub struct OrderPlaced {
///     #[prost(string, tag = "1")]
///     pub order_id: String,
/// }
/// ```
///
/// # The `#[event(…)]` attribute
///
/// | key | required | value |
/// | --- | --- | --- |
/// | `topic` | yes | the topic the event is published to: 1 to 249 characters of ASCII letters, digits, `.`, `_` and `-`, not `.` or `..` (the sidecar's rule) |
/// | `type_name` | yes | the versioned type name carried in the `type` header: dot-separated, no whitespace, ending in a version segment `.v<N>`, e.g. `shop.OrderPlaced.v1` |
/// | `key` | no | the name of the key field; without it the event has no key |
/// | `crate` | no | the path of the SDK in the generated code, default `::sidestream` (for a crate that re-exports it) |
///
/// Values are string literals; each key may be given once, over one or several `#[event]`
/// attributes.
///
/// The key field's type must be one of `String`, `Vec<u8>`, `bytes::Bytes`, `u32`, `u64`,
/// `i32`, `i64` (prost's types for proto `string`, `bytes` and integer fields), or an
/// `Option` of one of these (a proto3 `optional` field). The type is checked as written, so
/// spell it as prost does rather than through a type alias. How each type becomes key bytes
/// is part of the wire contract and documented on the trait, under "Keys".
///
/// # Errors
///
/// Compile errors, each pointing at the offending token: a missing attribute, `topic` or
/// `type_name`; an unknown or repeated key, or a value that is not a string literal; a topic
/// or type name that breaks its rule; a `key` that names no field, or a field whose type
/// cannot be a key; and a derive on an enum, union, tuple struct or unit struct.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
