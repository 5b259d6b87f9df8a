//! Compiles `proto/shop/v1/*.proto` with protox (a protobuf compiler in Rust, so no system
//! `protoc` is needed) and generates the Rust types with prost-build.
//!
//! Each event message gets `#[derive(sidestream::Event)]` and its `#[event(…)]` attribute
//! here, so the `.proto` files stay plain protobuf that services in other languages can use
//! too, and the topic, key and type name of each event are declared in one place.
#![allow(
    clippy::print_stdout,
    reason = "cargo reads build script directives from stdout"
)]

use std::error::Error;

/// The shop's files, relative to the include root `proto/`.
const PROTOS: [&str; 2] = ["shop/v1/orders.proto", "shop/v1/payments.proto"];

/// Each event: its fully qualified protobuf name, topic, key field and versioned type name.
const EVENTS: [(&str, &str, &str, &str); 3] = [
    (
        "shop.v1.OrderPlaced",
        "orders",
        "order_id",
        "shop.OrderPlaced.v1",
    ),
    (
        "shop.v1.PaymentCompleted",
        "payments",
        "order_id",
        "shop.PaymentCompleted.v1",
    ),
    (
        "shop.v1.PaymentFailed",
        "payments",
        "order_id",
        "shop.PaymentFailed.v1",
    ),
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let mut config = prost_build::Config::new();
    for (message, topic, key, type_name) in EVENTS {
        // The derive comes first: it introduces the `#[event]` helper attribute.
        config.message_attribute(message, "#[derive(::sidestream::Event)]");
        config.message_attribute(
            message,
            format!(r#"#[event(topic = "{topic}", key = "{key}", type_name = "{type_name}")]"#),
        );
    }
    config.compile_fds(fds)?;
    Ok(())
}
