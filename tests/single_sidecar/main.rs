//! One sidecar process, end to end: the SDK and the CLI against a real `sidestream sidecar`
//! on 127.0.0.1, over QUIC with mutual TLS, with its data on the real file system.

mod admin;
mod bad_input;
mod cli;
mod config;
mod crash;
mod groups;
mod tracing;
mod typed;

use std::time::Duration;

use sidestream_tests::SidecarProcess;

/// Every test's bound on waiting for something that should happen.
const PATIENCE: Duration = Duration::from_secs(60);

/// The test event types.
pub(crate) mod events {
    /// An order, keyed by its id.
    #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
    #[event(topic = "orders", key = "order_id", type_name = "test.OrderPlaced.v1")]
    pub(crate) struct OrderPlaced {
        #[prost(string, tag = "1")]
        pub(crate) order_id: String,
        #[prost(uint64, tag = "2")]
        pub(crate) sequence: u64,
    }

    /// Another type on the same topic, to meet the type check.
    #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
    #[event(
        topic = "orders",
        key = "order_id",
        type_name = "test.OrderCancelled.v1"
    )]
    pub(crate) struct OrderCancelled {
        #[prost(string, tag = "1")]
        pub(crate) order_id: String,
    }
}

/// A sidecar with a fresh data directory.
pub(crate) fn sidecar() -> (tempfile::TempDir, SidecarProcess) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let process = SidecarProcess::start(dir.path());
    (dir, process)
}

/// Publishes orders `o-<sequence>` of sequences `range`, one at a time, each acknowledged.
pub(crate) async fn publish_orders(publisher: &sidestream::Client, range: std::ops::Range<u64>) {
    for sequence in range {
        publisher
            .publish(&events::OrderPlaced {
                order_id: format!("o-{sequence}"),
                sequence,
            })
            .await
            .expect("published and acknowledged");
    }
}

/// Creates `topic` with `partitions`.
pub(crate) async fn create_topic(client: &sidestream::Client, topic: &str, partitions: u32) {
    client
        .create_topic(
            topic,
            sidestream::TopicSettings::new().partitions(partitions),
        )
        .await
        .expect("the topic is created");
}
