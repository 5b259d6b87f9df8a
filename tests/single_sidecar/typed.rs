//! Typed events through one sidecar: order per partition, headers, live delivery, type checks.

use std::collections::{BTreeMap, HashSet};

use sidestream::{Acks, Event, RawEvent, StartAt, headers};
use tokio::time::timeout;

use crate::events::{OrderCancelled, OrderPlaced};
use crate::{PATIENCE, create_topic, sidecar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_across_partitions_come_back_in_partition_order() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("order-service").await;
    create_topic(&client, "orders", 4).await;

    let total = 2_000u64;
    let mut pending = Vec::new();
    for sequence in 0..total {
        let order = OrderPlaced {
            order_id: format!("o-{}", sequence % 50),
            sequence,
        };
        pending.push(client.publish_nowait(&order).await.expect("published"));
    }
    let mut receipts = Vec::new();
    for receipt in pending {
        receipts.push(receipt.await.expect("acknowledged"));
    }
    assert!(receipts.iter().all(|r| r.offset.is_some()));

    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_sequence_per_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, u32> = BTreeMap::new();
    let mut ids = HashSet::new();
    for _ in 0..total {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a valid event");
        if let Some(last) = last_offset.insert(delivery.partition, delivery.offset) {
            assert!(
                delivery.offset > last,
                "offsets increase within a partition"
            );
        }
        let key = delivery.event.order_id.clone();
        // Same key, same partition; within a key, publish order.
        let partition = *partition_of_key
            .entry(key.clone())
            .or_insert(delivery.partition);
        assert_eq!(partition, delivery.partition);
        if let Some(previous) = last_sequence_per_key.insert(key, delivery.event.sequence) {
            assert!(delivery.event.sequence > previous, "per-key order is kept");
        }
        let header = |name: &str| {
            delivery
                .headers()
                .get_str(name)
                .unwrap_or_else(|| panic!("header {name} is missing or not UTF-8"))
                .to_owned()
        };
        assert_eq!(header(headers::TYPE), OrderPlaced::TYPE_NAME);
        assert_eq!(header(headers::SOURCE), "order-service");
        let id = delivery.headers().id().expect("an id header");
        assert_eq!(id.get_version_num(), 7);
        let time = delivery.headers().time().expect("a time");
        assert_eq!(time.len(), "2026-01-01T00:00:00.000Z".len());
        assert!(time.ends_with('Z'), "{time}");
        let trace = delivery.headers().traceparent().expect("a traceparent");
        assert!(trace.is_sampled());
        assert!(ids.insert(id), "ids are unique");
        delivery.ack().await.expect("acked");
    }
    assert_eq!(ids.len() as u64, total);
    subscription.close().await.expect("closed");
    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_receives_events_published_after_it() {
    let (_dir, sidecar) = sidecar();
    let publisher = sidecar.client("publisher").await;
    let consumer = sidecar.client("consumer").await;
    create_topic(&publisher, "orders", 2).await;
    publisher
        .publish(&OrderPlaced {
            order_id: "before".into(),
            sequence: 0,
        })
        .await
        .expect("published");
    let mut subscription = consumer
        .subscribe::<OrderPlaced>()
        .from(StartAt::Latest)
        .start()
        .await
        .expect("subscribed");
    for sequence in 1..=20 {
        publisher
            .publish(&OrderPlaced {
                order_id: format!("after-{sequence}"),
                sequence,
            })
            .await
            .expect("published");
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a valid event");
        seen.push(delivery.event.sequence);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<_>>(),
        "nothing from before, all from after"
    );
    publisher.close().await.expect("the client closes cleanly");
    consumer.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_another_type_is_reported_naming_both_types() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("orders").await;
    create_topic(&client, "orders", 1).await;
    client
        .publish(&OrderCancelled {
            order_id: "o-1".into(),
        })
        .await
        .expect("published");
    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let error = timeout(PATIENCE, subscription.next())
        .await
        .expect("an answer in time")
        .expect("an item")
        .expect_err("a type mismatch, not a mis-decoded value");
    let message = error.to_string();
    assert!(message.contains(OrderPlaced::TYPE_NAME), "{message}");
    assert!(message.contains(OrderCancelled::TYPE_NAME), "{message}");
    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_raw_event_keeps_its_id_trace_and_time() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("order-service").await;
    create_topic(&client, "orders", 1).await;
    create_topic(&client, "orders-mirror", 1).await;
    client
        .publish(&OrderPlaced {
            order_id: "o-1".into(),
            sequence: 1,
        })
        .await
        .expect("published");

    let (original, delivered) = first_raw_delivery(&client, "orders").await;
    // Later than the original by more than the clock's resolution.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mirror_service = sidecar.client("mirror-service").await;
    mirror_service
        .publish_raw("orders-mirror", delivered.event.clone(), Acks::All)
        .await
        .expect("forwarded");

    let (mirror, forwarded) = first_raw_delivery(&client, "orders-mirror").await;
    let (before, after) = (delivered.headers(), forwarded.headers());
    assert_eq!(forwarded.timestamp, delivered.timestamp);
    assert_eq!(after.time(), before.time());
    assert_eq!(after.id(), before.id());
    assert_eq!(after.traceparent(), before.traceparent());
    assert_eq!(after.source(), Some("order-service"));
    assert_eq!(after.type_name(), Some(OrderPlaced::TYPE_NAME));
    assert_eq!(forwarded.event.value, delivered.event.value);
    original.close().await.expect("closed");
    mirror.close().await.expect("closed");
    mirror_service.close().await.expect("closed");
    client.close().await.expect("closed");
}

/// A subscription of `topic` from its start, and its first delivery.
async fn first_raw_delivery(
    client: &sidestream::Client,
    topic: &str,
) -> (
    sidestream::Subscription<RawEvent>,
    sidestream::Delivery<RawEvent>,
) {
    let mut subscription = client
        .subscribe_raw(topic)
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let delivery = timeout(PATIENCE, subscription.next())
        .await
        .expect("in time")
        .expect("a delivery")
        .expect("an event");
    (subscription, delivery)
}
